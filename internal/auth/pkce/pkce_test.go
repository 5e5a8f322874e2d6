package pkce

import (
	"strings"
	"testing"
)

// TestRFC7636Example uses the worked example of RFC 7636 appendix B.
func TestRFC7636Example(t *testing.T) {
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	if got := Challenge(verifier); got != challenge {
		t.Fatalf("Challenge = %s, want %s", got, challenge)
	}
	if err := CheckChallenge(challenge, MethodS256); err != nil {
		t.Fatal(err)
	}
	if err := Verify(verifier, challenge); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRejects(t *testing.T) {
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	challenge := Challenge(verifier)
	cases := map[string]string{
		"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl": "does not match",
		"short":                  "43 to 128",
		strings.Repeat("a", 129): "43 to 128",
		verifier[:42] + "+":      "character 43",
		challenge:                "does not match", // the challenge itself is no verifier for it
	}
	for v, want := range cases {
		err := Verify(v, challenge)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Verify(%q) = %v, want %q", v, err, want)
		}
	}
	// plain: the challenge equal to the verifier must not pass.
	if err := Verify(verifier, verifier); err == nil {
		t.Error("plain-method style challenge accepted")
	}
}

func TestCheckChallenge(t *testing.T) {
	good := Challenge(strings.Repeat("x", 64))
	cases := []struct{ challenge, method, want string }{
		{good, "plain", `"plain" is not supported`},
		{good, "", "missing"},
		{good + "A", MethodS256, "43 base64url"},
		{strings.Replace(good, good[:1], "+", 1), MethodS256, "43 base64url"},
	}
	for _, c := range cases {
		err := CheckChallenge(c.challenge, c.method)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckChallenge(%q, %q) = %v, want %q", c.challenge, c.method, err, c.want)
		}
	}
}
