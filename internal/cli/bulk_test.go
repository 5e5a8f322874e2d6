package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
)

func TestBulkExportCommand(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	admin := s.AdminToken()
	for _, id := range []string{"a", "b"} {
		if r := s.Do("PUT", "Patient/"+id, admin, map[string]any{"resourceType": "Patient", "id": id}); r.Status >= 300 {
			t.Fatalf("PUT: %d %s", r.Status, r.Body)
		}
	}
	s.Do("PUT", "Group/g", admin, map[string]any{"resourceType": "Group", "id": "g", "type": "person", "actual": true,
		"member": []any{map[string]any{"entity": map[string]any{"reference": "Patient/b"}}}})
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := Main([]string{"bulk", "export", s.FHIR, "--group", "g", "--type", "Patient", "--since", "2000-01-01", "--out", dir, "--token", s.Token("system/*.read", "")}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "exported 1 resources") || !strings.Contains(errOut.String(), "export started") {
		t.Fatalf("output %q / %q", out.String(), errOut.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "Patient-1.ndjson"))
	if err != nil || !strings.Contains(string(b), `"id":"b"`) || strings.Contains(string(b), `"id":"a"`) {
		t.Fatalf("Patient-1.ndjson: %v %s", err, b)
	}
	out.Reset()
	errOut.Reset()
	// PHR_TOKEN is the token of the user's own server: never sent to URL.
	t.Setenv("PHR_TOKEN", s.Token("system/*.read", ""))
	if code := Main([]string{"bulk", "export", s.FHIR, "--out", dir}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "401") {
		t.Fatalf("without token (PHR_TOKEN set): exit %d %s", code, errOut.String())
	}
	t.Setenv("PHR_REMOTE_TOKEN", s.Token("system/*.read", ""))
	if code := Main([]string{"bulk", "export", s.FHIR, "--type", "Patient", "--out", t.TempDir()}, &out, &errOut); code != 0 {
		t.Fatalf("PHR_REMOTE_TOKEN: exit %d %s", code, errOut.String())
	}
	if code := Main([]string{"bulk", "export"}, &out, &errOut); code != 2 {
		t.Fatalf("without URL: exit %d", code)
	}
}
