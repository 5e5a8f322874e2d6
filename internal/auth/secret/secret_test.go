package secret

import (
	"encoding/base64"
	"testing"
)

func TestNewIsRandomAndWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s := New()
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) != Size || len(s) != 43 {
			t.Fatalf("secret %q: %d bytes, err %v", s, len(b), err)
		}
		if seen[s] {
			t.Fatalf("secret %q repeated", s)
		}
		seen[s] = true
	}
}

func TestHashAndMatches(t *testing.T) {
	s := New()
	h := Hash(s)
	if h == s || len(h) != 43 {
		t.Fatalf("Hash = %q", h)
	}
	if Hash(s) != h {
		t.Fatal("Hash is not deterministic; lookups by hash would fail")
	}
	// SHA-256("abc"), FIPS 180-2 example, base64url.
	if got := Hash("abc"); got != "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0" {
		t.Fatalf("Hash(abc) = %s", got)
	}
	if !Matches(s, h) || Matches(New(), h) || Matches(s, h[:42]) {
		t.Fatal("Matches wrong")
	}
}
