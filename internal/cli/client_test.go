package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServerURLs(t *testing.T) {
	for _, c := range []struct{ in, root, fhir string }{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080", "http://127.0.0.1:8080/fhir"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080", "http://127.0.0.1:8080/fhir"},
		{"http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080", "http://127.0.0.1:8080/fhir"},
		{"http://127.0.0.1:8080/fhir/", "http://127.0.0.1:8080", "http://127.0.0.1:8080/fhir"},
		{" https://example.org/phr ", "https://example.org/phr", "https://example.org/phr/fhir"},
		{"https://example.org/phr/fhir", "https://example.org/phr", "https://example.org/phr/fhir"},
	} {
		root, base, err := serverURLs(c.in)
		if err != nil || root != c.root || base != c.fhir {
			t.Errorf("serverURLs(%q) = %q, %q, %v; want %q, %q", c.in, root, base, err, c.root, c.fhir)
		}
	}
	for _, bad := range []string{"127.0.0.1:8080", "ftp://host", "http://", "http://host/fhir?x=1", "http://user:pw@host"} {
		if _, _, err := serverURLs(bad); err == nil {
			t.Errorf("serverURLs(%q) accepted", bad)
		}
	}
}

// TestServerForms: every client command takes the server's root or its
// FHIR base for --server, and the token from --token, --token-file or the
// environment.
func TestServerForms(t *testing.T) {
	s := seed(t)
	tok := s.AdminToken()
	dir := t.TempDir()
	nd := filepath.Join(dir, "in.ndjson")
	os.WriteFile(nd, []byte(`{"resourceType":"Patient","id":"imp1","name":[{"family":"Import"}]}`+"\n"), 0o600)
	for i, srv := range []string{s.URL, s.URL + "/", s.FHIR, s.FHIR + "/"} {
		if code, out, errOut := run(t, "import", "--server", srv, "--token", tok, "--source", "forms", "--quiet", nd); code != 0 || !strings.Contains(out, "batch") {
			t.Fatalf("import --server %s: %d %s %s", srv, code, out, errOut)
		}
		if code, out, errOut := run(t, "log", "--server", srv, "--token", tok); code != 0 || !strings.Contains(out, "source urn:phr:source:forms") {
			t.Fatalf("log --server %s: %d %s %s", srv, code, out, errOut)
		}
		out := filepath.Join(dir, "x.ndjson")
		if code, _, errOut := run(t, "export", "--server", srv, "--token", tok, "--patient", "p1", "--format", "ndjson", "--out", out, "--quiet"); code != 0 {
			t.Fatalf("export --server %s: %d %s", srv, code, errOut)
		}
		if b, _ := os.ReadFile(out); bytes.Count(b, []byte("\n")) != 4 { // cover, p1, o1, o2
			t.Fatalf("export --server %s:\n%s", srv, b)
		}
		code, lout, errOut := run(t, "shl", "list", "--server", srv, "--token", tok)
		if code != 0 || strings.Count(lout, "\n") != i {
			t.Fatalf("shl list --server %s: %d %q %s", srv, code, lout, errOut)
		}
		if code, _, errOut := run(t, "share", "--server", srv, "--token", tok, "--patient", "p1", "--label", "form"); code != 0 {
			t.Fatalf("share --server %s: %d %s", srv, code, errOut)
		}
	}

	// --token-file, and the environment.
	tf := filepath.Join(dir, "token")
	os.WriteFile(tf, []byte(tok+"\n"), 0o600)
	if code, out, errOut := run(t, "log", "--server", s.URL, "--token-file", tf); code != 0 || !strings.Contains(out, "batch") {
		t.Fatalf("--token-file: %d %s %s", code, out, errOut)
	}
	t.Setenv("PHR_SERVER", s.FHIR)
	t.Setenv("PHR_TOKEN", "not-a-token")
	if code, _, errOut := run(t, "log"); code != 1 || !strings.Contains(errOut, "401") {
		t.Fatalf("PHR_TOKEN with a bad token: %d %s", code, errOut)
	}
	// A flag on the command line wins over the environment.
	if code, out, errOut := run(t, "log", "--token-file", tf); code != 0 || !strings.Contains(out, "batch") {
		t.Fatalf("--token-file over PHR_TOKEN: %d %s %s", code, out, errOut)
	}
	t.Setenv("PHR_TOKEN", tok)
	if code, out, errOut := run(t, "conflicts", "list"); code != 0 || !strings.Contains(out, "no open conflicts") {
		t.Fatalf("PHR_SERVER and PHR_TOKEN: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := run(t, "log", "--token", tok, "--token-file", tf); code != 2 || !strings.Contains(errOut, "not both") {
		t.Fatalf("--token and --token-file: %d %s", code, errOut)
	}
	t.Setenv("PHR_TOKEN", "")
	if code, _, errOut := run(t, "export", "--out", filepath.Join(dir, "y")); code != 2 || !strings.Contains(errOut, "needs a token") {
		t.Fatalf("no token: %d %s", code, errOut)
	}
	if code, _, errOut := run(t, "log", "--server", "127.0.0.1:8080", "--token", tok); code != 2 || !strings.Contains(errOut, "http(s) URL") {
		t.Fatalf("--server without scheme: %d %s", code, errOut)
	}
	for _, cmd := range [][]string{{"log"}, {"export"}, {"share", "--label", "x"}, {"shl", "list"}} {
		if code, _, errOut := run(t, append(cmd, "--server", s.URL, "--token", tok, "--data", dir)...); code != 2 || !strings.Contains(errOut, "give --server or --data, not both") {
			t.Fatalf("%v with --server and --data: %d %s", cmd, code, errOut)
		}
	}
	// --data on the command line wins over PHR_SERVER.
	if code, out, errOut := run(t, "log", "--data", s.App.Config.DataDir); code != 0 || !strings.Contains(out, "source urn:phr:source:forms") {
		t.Fatalf("--data with PHR_SERVER set: %d %s %s", code, out, errOut)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if code, _, errOut := run(t, "log", "--token-file", empty); code != 1 || !strings.Contains(errOut, "one access token") {
		t.Fatalf("empty --token-file: %d %s", code, errOut)
	}
}
