package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/shlink"
)

// TestShareAndFetch: `phr share` against a running server prints a link
// and writes its QR code; `phr shl fetch` opens it with the passcode.
func TestShareAndFetch(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	admin := s.AdminToken()
	for path, body := range map[string]string{
		"Patient/p1":               `{"resourceType":"Patient","id":"p1","name":[{"family":"Gamma"}]}`,
		"AllergyIntolerance/p1-a1": `{"resourceType":"AllergyIntolerance","id":"p1-a1","patient":{"reference":"Patient/p1"},"code":{"text":"Peanuts"}}`,
	} {
		if r := s.Do("PUT", path, admin, body); r.Status != 201 {
			t.Fatalf("PUT %s: %d %s", path, r.Status, r.Body)
		}
	}
	tok := s.Token("patient/*.rs", "p1")
	png := filepath.Join(t.TempDir(), "link.png")
	code, out, errOut := run(t, "share", "--server", s.URL, "--token", tok, "--label", "For the ER", "--passcode", "1234", "--expires", "7d", "--summary", "--qr", png)
	if code != 0 {
		t.Fatalf("share: exit %d: %s", code, errOut)
	}
	link := strings.TrimSpace(out)
	p, err := shlink.Decode(link)
	if err != nil || p.Label != "For the ER" || p.Flag != "P" || p.Exp == 0 {
		t.Fatalf("link %q: %+v %v", link, p, err)
	}
	if zbar, err := exec.LookPath("zbarimg"); err == nil {
		// QR codes only: with every symbology on, zbarimg now and then
		// also reads a bar code in the QR code's modules.
		got, err := exec.Command(zbar, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", png).Output()
		if err != nil || strings.TrimSpace(string(got)) != link {
			t.Fatalf("zbarimg read %q (%v), want %q", got, err, link)
		}
	} else {
		t.Log("zbarimg not installed; the QR file is not scanned")
	}

	code, _, errOut = run(t, "shl", "fetch", link, "--passcode", "0000")
	if code != 1 || !strings.Contains(errOut, "wrong or missing passcode (9 attempts left)") {
		t.Fatalf("wrong passcode: exit %d: %s", code, errOut)
	}
	dir := t.TempDir()
	code, out, errOut = run(t, "shl", "fetch", link, "--passcode", "1234", "--out", dir, "--recipient", "cli test")
	if code != 0 || !strings.Contains(out, "file-1.json") {
		t.Fatalf("fetch: exit %d: %s %s", code, out, errOut)
	}
	b, err := os.ReadFile(filepath.Join(dir, "file-1.json"))
	if err != nil || !bytes.Contains(b, []byte("Peanuts")) || !bytes.Contains(b, []byte(`"type":"document"`)) {
		t.Fatalf("fetched file: %v %.200s", err, b)
	}
	// The owner lists the link, reads its access log and revokes it.
	code, out, errOut = run(t, "shl", "list", "--server", s.URL, "--token", tok)
	fields := strings.Split(strings.TrimSpace(out), "\t")
	if code != 0 || len(fields) < 7 || fields[1] != "active" || fields[6] != "For the ER" {
		t.Fatalf("list: exit %d: %q %s", code, out, errOut)
	}
	id := fields[0]
	code, out, errOut = run(t, "shl", "log", id, "--server", s.URL, "--token", tok)
	if code != 0 || !strings.Contains(out, "\"cli test\"") || !strings.Contains(out, "\t401\t") {
		t.Fatalf("log: exit %d: %q %s", code, out, errOut)
	}
	if code, _, errOut := run(t, "shl", "revoke", id, "--server", s.URL, "--token", s.Token("patient/*.rs", "other")); code != 1 || !strings.Contains(errOut, "404") {
		t.Fatalf("revoke by another patient: exit %d: %s", code, errOut)
	}
	if code, _, errOut := run(t, "shl", "revoke", id, "--server", s.URL, "--token", tok); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	if code, _, errOut := run(t, "shl", "fetch", link, "--passcode", "1234"); code != 1 || !strings.Contains(errOut, "not active") {
		t.Fatalf("fetch after revoke: exit %d: %s", code, errOut)
	}

	// Errors name the problem.
	if code, _, errOut := run(t, "share", "--server", s.URL, "--token", tok, "--type", "Nonsense"); code != 1 || !strings.Contains(errOut, "Nonsense") {
		t.Fatalf("bad type: exit %d: %s", code, errOut)
	}
	if code, _, errOut := run(t, "share", "--server", s.URL, "--qr", "x.gif", "--token", tok); code != 2 || !strings.Contains(errOut, ".png or .svg") {
		t.Fatalf("bad qr name: exit %d: %s", code, errOut)
	}
}

// TestShareLocal makes a link straight in a data directory.
func TestShareLocal(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	app, err := server.Open(ctx, server.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sys := access.With(ctx, access.System{})
	if _, err := app.Records.Update(sys, "Patient", "p9", []byte(`{"resourceType":"Patient","id":"p9"}`), records.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	app.Close()
	svg := filepath.Join(t.TempDir(), "qr.svg")
	code, out, errOut := run(t, "share", "--data", dir, "--patient", "p9", "--base-url", "https://phr.example.org", "--flag", "L", "--qr", svg, "--viewer")
	if code != 0 {
		t.Fatalf("share: exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "https://phr.example.org/shl/view#shlink:/") {
		t.Fatalf("viewer link %q", out)
	}
	p, err := shlink.Decode(strings.TrimSpace(out))
	if err != nil || !strings.HasPrefix(p.URL, "https://phr.example.org/shl/m/") || p.Flag != "L" {
		t.Fatalf("payload %+v %v", p, err)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.HasPrefix(b, []byte("<svg")) {
		t.Fatalf("svg: %v %.40s", err, b)
	}
	code, out, errOut = run(t, "shl", "list", "--data", dir)
	if code != 0 || !strings.Contains(out, "\tactive\tPatient/p9\tflag=L\t") {
		t.Fatalf("list: exit %d: %q %s", code, out, errOut)
	}
	if code, _, errOut := run(t, "shl", "revoke", strings.Split(out, "\t")[0], "--data", dir); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	if code, out, _ := run(t, "shl", "list", "--data", dir); code != 0 || !strings.Contains(out, "\trevoked\t") {
		t.Fatalf("list after revoke: %q", out)
	}
	if code, _, errOut := run(t, "share", "--data", dir); code != 2 || !strings.Contains(errOut, "--patient") {
		t.Fatalf("no patient: exit %d: %s", code, errOut)
	}
}
