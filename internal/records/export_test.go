package records

// SetBeforeWrite makes f run between the preparation of a Bundle's entries
// and its write transaction (nil: nothing); tests use it to write in that
// window as a concurrent client would.
func SetBeforeWrite(f func()) { beforeWrite = f }

// SetAfterGroupEntry makes f run after each entry of a group of batch
// entries sharing a store transaction (nil: nothing); an error f returns
// fails the group's transaction.
func SetAfterGroupEntry(f func(k int) error) { afterGroupEntry = f }
