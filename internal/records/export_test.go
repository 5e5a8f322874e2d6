package records

// SetBeforeWrite makes f run between the preparation of a Bundle's entries
// and its write transaction (nil: nothing); tests use it to write in that
// window as a concurrent client would.
func SetBeforeWrite(f func()) { beforeWrite = f }
