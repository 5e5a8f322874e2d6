package portal_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/bulk"
)

func TestAdminExports(t *testing.T) {
	if bulk.JobKind != "bulk-export" {
		t.Fatalf("the portal lists jobs of kind bulk-export; bulk.JobKind is %q", bulk.JobKind)
	}
	e := start(t, "sqlite")
	e.seed()
	admin := e.login("admin", "")
	csrf := e.csrf(admin)
	e.get("/manage/exports", admin).mustContain(t, "exports page", "Start a bulk export", "No exports.", `href="/manage/exports"`)
	p := e.page(http.MethodPost, "/manage/exports", admin, url.Values{"csrf": {csrf}, "level": {"system"}, "type": {"Patient", "Observation"}})
	if p.Status != http.StatusSeeOther || !strings.HasPrefix(p.Header.Get("Location"), "/manage/exports/") {
		t.Fatalf("kick-off: %d %q\n%s", p.Status, p.Header.Get("Location"), clip(p.Body))
	}
	job := p.Header.Get("Location")
	deadline := time.Now().Add(time.Minute)
	for {
		p = e.get(job, admin)
		if strings.Contains(p.Body, "State: <strong>done</strong>") {
			break
		}
		if p.Status != 200 || strings.Contains(p.Body, "State: <strong>failed</strong>") || time.Now().After(deadline) {
			t.Fatalf("export status: %d\n%s", p.Status, clip(p.Body))
		}
		time.Sleep(time.Second)
	}
	p.mustContain(t, "done export", "<td>Patient</td><td>2</td>", "<td>Observation</td>")
	m := regexp.MustCompile(`href="(/manage/exports/[^"]+/file/[^"]+)" download>[^<]*</a></td></tr>`).FindAllStringSubmatch(p.Body, -1)
	if len(m) == 0 {
		t.Fatal("no file links")
	}
	var all string
	for _, f := range m {
		d := e.get(f[1], admin)
		if d.Status != 200 || !strings.Contains(d.Header.Get("Content-Disposition"), "attachment") {
			t.Fatalf("download %s: %d %v", f[1], d.Status, d.Header)
		}
		all += d.Body
	}
	if !strings.Contains(all, `"id":"alice"`) || !strings.Contains(all, `"id":"chol-a"`) {
		t.Errorf("the exported files lack alice's data:\n%.500s", all)
	}
	e.get("/manage/exports", admin).mustContain(t, "listed", strings.TrimPrefix(job, "/manage/exports/"), "done")
	if p := e.page(http.MethodPost, job+"/cancel", admin, url.Values{"csrf": {csrf}}); p.Status != http.StatusSeeOther {
		t.Errorf("delete: %d", p.Status)
	}
	// Patients may not.
	alice := e.login("patient", "alice")
	for _, path := range []string{"/manage/exports", job, m[0][1]} {
		if p := e.get(path, alice); p.Status != http.StatusForbidden {
			t.Errorf("alice GET %s: %d", path, p.Status)
		}
	}
}
