package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
)

// Another phr serve is the remote: clone copies its record through Bulk
// Data $export, pull brings only what changed since (_since), including
// deletions.
func TestCloneAndPull(t *testing.T) {
	remote := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.ExportRate = 50 * time.Millisecond }})
	admin := remote.AdminToken()
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("p%d", i)
		if r := remote.Do("PUT", "Patient/"+id, admin, map[string]any{"resourceType": "Patient", "id": id, "gender": "female"}); r.Status >= 300 {
			t.Fatalf("PUT: %d %s", r.Status, r.Body)
		}
		if r := remote.Do("PUT", "Observation/o"+id, admin, map[string]any{"resourceType": "Observation", "id": "o" + id, "status": "final",
			"code": map[string]any{"text": "weight"}, "subject": map[string]any{"reference": "Patient/" + id}}); r.Status >= 300 {
			t.Fatalf("PUT: %d %s", r.Status, r.Body)
		}
	}
	data := t.TempDir()
	state := filepath.Join(t.TempDir(), "remote.json")
	tok := remote.Token("system/*.read", "")
	// (the server's address: clone finds its FHIR base)
	code, out, errOut := run(t, "clone", strings.TrimSuffix(remote.FHIR, "/fhir"), "--remote-token", tok, "--state", state, "--data", data)
	if code != 0 || !strings.Contains(out, "conflicts 0") || !strings.Contains(out, "rejected 0") || !strings.Contains(out, "created ") {
		t.Fatalf("clone: %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, remote.FHIR+" is the FHIR base") {
		t.Errorf("clone of the server's address: %s", errOut)
	}
	// Nothing changed: pull writes nothing.
	code, out, errOut = run(t, "pull", "--remote-token", tok, "--state", state, "--data", data)
	// (The remote audits each export: new AuditEvents may arrive.)
	if code != 0 || !(strings.Contains(out, "nothing changed") || strings.Contains(out, "updated 0,") && strings.Contains(out, "deleted 0")) {
		t.Fatalf("empty pull: %d\n%s\n%s", code, out, errOut)
	}
	// The remote changes one resource and deletes another.
	time.Sleep(10 * time.Millisecond)
	if r := remote.Do("PUT", "Patient/p1", admin, map[string]any{"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}); r.Status >= 300 {
		t.Fatal(r.Status)
	}
	if r := remote.Do("DELETE", "Observation/op2", admin, nil); r.Status >= 300 {
		t.Fatal(r.Status)
	}
	code, out, errOut = run(t, "pull", strings.TrimSuffix(remote.FHIR, "/fhir"), "--remote-token", tok, "--state", state, "--data", data)
	if code != 0 || !strings.Contains(out, "updated 1,") || !strings.Contains(out, "deleted 1") || !strings.Contains(out, "conflicts 0") {
		t.Fatalf("pull: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, "diff", "Patient/p1", "--data", data)
	if code != 0 || !strings.Contains(out, "+ Patient.birthDate") {
		t.Errorf("diff after pull: %d\n%s", code, out)
	}
	// A Bulk Data export directory, or its manifest, imports too.
	exp := t.TempDir()
	if code, out, errOut := run(t, "bulk", "export", remote.FHIR, "--token", tok, "--out", exp, "--quiet"); code != 0 {
		t.Fatalf("bulk export: %d\n%s\n%s", code, out, errOut)
	}
	for _, arg := range []string{exp, filepath.Join(exp, "manifest.json")} {
		code, out, errOut := run(t, "import", "--data", t.TempDir(), "--source", remote.FHIR, arg)
		if code != 0 || !strings.Contains(out, "created ") || strings.Contains(out, "created 0,") || !strings.Contains(out, "rejected 0") {
			t.Errorf("import %s: %d\n%s\n%s", arg, code, out, errOut)
		}
	}
	code, out, _ = run(t, "log", "--data", data)
	if code != 0 || !strings.Contains(out, "source "+remote.FHIR) {
		t.Errorf("log: %d\n%s", code, out)
	}
	// Problems with the local side are found before the remote exports.
	if code, _, errOut := run(t, "pull", "--remote-token", tok, "--state", state, "--server", "http://127.0.0.1:1", "--data", data); code != 2 || !strings.Contains(errOut, "not both") || strings.Contains(errOut, "export") {
		t.Errorf("pull with --server and --data: %d %s", code, errOut)
	}
	if code, _, errOut := run(t, "clone", remote.FHIR, "--remote-token", tok, "--state", filepath.Join(t.TempDir(), "s.json"), "--server", "http://127.0.0.1:1"); code != 2 || !strings.Contains(errOut, "needs a token") || strings.Contains(errOut, "export") {
		t.Errorf("clone to --server without a token: %d %s", code, errOut)
	}
}

// TestCloneBringsDocuments: a clone of a person's record (with an
// admin's token, or with the person's own) brings their documents'
// content: the Binary an attachment points at, and an upload whose
// securityContext names them; not another patient's.
func TestCloneBringsDocuments(t *testing.T) {
	remote := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.ExportRate = 50 * time.Millisecond }})
	admin := remote.AdminToken()
	for path, body := range map[string]string{
		"Patient/alice":           `{"resourceType":"Patient","id":"alice"}`,
		"Patient/bob":             `{"resourceType":"Patient","id":"bob"}`,
		"Binary/letter":           `{"resourceType":"Binary","id":"letter","contentType":"text/plain","data":"TEVUVEVS"}`,
		"DocumentReference/d1":    `{"resourceType":"DocumentReference","id":"d1","status":"current","subject":{"reference":"Patient/alice"},"content":[{"attachment":{"contentType":"text/plain","url":"Binary/letter"}}]}`,
		"Binary/alice-upload":     `{"resourceType":"Binary","id":"alice-upload","contentType":"text/plain","securityContext":{"reference":"Patient/alice"},"data":"U0NBTg=="}`,
		"Binary/bob-upload":       `{"resourceType":"Binary","id":"bob-upload","contentType":"text/plain","securityContext":{"reference":"Patient/bob"},"data":"Qk9C"}`,
		"Observation/alice-focus": `{"resourceType":"Observation","id":"alice-focus","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"},"focus":[{"reference":"Binary/bob-upload"}]}`,
	} {
		if r := remote.Do("PUT", path, admin, body); r.Status >= 300 {
			t.Fatalf("PUT %s: %d %s", path, r.Status, r.Body)
		}
	}
	for who, tok := range map[string]string{"alice": remote.Token("patient/*.read", "alice"), "the admin": remote.Token("system/*.read", "")} {
		data := t.TempDir()
		code, out, errOut := run(t, "clone", remote.FHIR, "--remote-token", tok, "--state", filepath.Join(t.TempDir(), "remote.json"), "--data", data)
		if code != 0 || !strings.Contains(out, "rejected 0") {
			t.Fatalf("%s's clone: %d\n%s\n%s", who, code, out, errOut)
		}
		app, err := server.Open(context.Background(), server.Config{DataDir: data, Addr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		ctx := access.With(context.Background(), access.System{Name: "test"})
		has := func(typ, id string) bool {
			res, err := app.Records.Read(ctx, typ, id)
			return err == nil && !res.Deleted
		}
		for _, id := range []string{"letter", "alice-upload"} {
			if !has("Binary", id) {
				t.Errorf("%s's clone lacks Binary/%s", who, id)
			}
		}
		// bob's upload comes with the admin's clone (alice's
		// Observation references it), not with alice's.
		if has("Binary", "bob-upload") != (who == "the admin") {
			t.Errorf("%s's clone: Binary/bob-upload %v", who, has("Binary", "bob-upload"))
		}
		app.Close()
	}
}
