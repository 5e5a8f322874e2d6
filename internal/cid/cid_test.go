package cid

import (
	"crypto/sha256"
	"testing"
)

// The expected values come from other implementations: the Rust cid
// crate's example (CIDv1 raw sha2-256 of "beep boop") and IPFS's name of
// the empty raw block.
func TestKnownCIDs(t *testing.T) {
	for in, want := range map[string]string{
		"beep boop": "bafkreieq5jui4j25lacwomsqgjeswwl3y5zcdrresptwgmfylxo2depppq",
		"":          "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
	} {
		if got := Of([]byte(in)); got != want {
			t.Errorf("Of(%q) = %s, want %s", in, got, want)
		}
		h := NewHasher()
		h.Write([]byte(in))
		if h.CID() != want {
			t.Errorf("Hasher(%q) = %s", in, h.CID())
		}
		d, err := Digest(want)
		sum := sha256.Sum256([]byte(in))
		if err != nil || string(d) != string(sum[:]) {
			t.Errorf("Digest(%s) = %x, %v", want, d, err)
		}
	}
	for _, bad := range []string{"", "b", "Qmfoo", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "bafkrei!!"} {
		if Valid(bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
}
