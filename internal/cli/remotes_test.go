package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
)

// A record cloned from two servers keeps both remotes with the record, as
// a repository keeps its remotes: phr pull works from any directory, pulls
// each remote (or the one named), and never sends one server's token to
// another.
func TestPullSeveralRemotes(t *testing.T) {
	fast := servertest.Options{Configure: func(c *server.Config) { c.ExportRate = 50 * time.Millisecond }}
	a := servertest.Start(t, "sqlite", fast)
	b := servertest.Start(t, "sqlite", fast)
	put := func(s *servertest.Server, id, birth string) {
		t.Helper()
		p := map[string]any{"resourceType": "Patient", "id": id, "gender": "female"}
		if birth != "" {
			p["birthDate"] = birth
		}
		if r := s.Do("PUT", "Patient/"+id, s.AdminToken(), p); r.Status >= 300 {
			t.Fatalf("PUT: %d %s", r.Status, r.Body)
		}
	}
	put(a, "pa", "")
	put(b, "pb", "")

	// Remote A is reached with SMART Backend Services (a key file given by
	// a relative path), remote B with a bearer token.
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES384", Use: "sig"}}})
	reg := a.Do("POST", "/admin/clients", a.AdminToken(), map[string]any{"name": "phr pull", "scope": "system/*.read", "jwks": json.RawMessage(pub)}, "Content-Type", "application/json")
	if reg.Status != 201 {
		t.Fatalf("register client: %d %s", reg.Status, reg.Body)
	}
	clientID := reg.JSON(t)["id"].(string)
	priv, _ := json.Marshal(jose.JSONWebKey{Key: key, KeyID: "k1", Algorithm: "ES384"})
	work := t.TempDir()
	t.Chdir(work)
	if err := os.WriteFile("a-key.jwk", priv, 0o600); err != nil {
		t.Fatal(err)
	}
	tokB := b.Token("system/*.read", "")
	data := filepath.Join(t.TempDir(), "record")

	if code, out, errOut := run(t, "clone", a.FHIR, "--client-id", clientID, "--key", "a-key.jwk", "--data", data); code != 0 || !strings.Contains(out, "created 1,") {
		t.Fatalf("clone A: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut := run(t, "clone", b.FHIR, "--remote-token", tokB, "--data", data); code != 0 || !strings.Contains(out, "created 1,") {
		t.Fatalf("clone B: %d\n%s\n%s", code, out, errOut)
	}
	state := filepath.Join(data, "remotes.json")
	raw, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("the remotes are kept with the record: %v", err)
	}
	var file remotesFile
	if err := json.Unmarshal(raw, &file); err != nil || len(file.Remotes) != 2 {
		t.Fatalf("remotes.json: %v\n%s", err, raw)
	}
	if strings.Contains(string(raw), tokB) || !strings.Contains(string(raw), filepath.Join(work, "a-key.jwk")) {
		t.Errorf("remotes.json holds a token or a relative key path:\n%s", raw)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("remotes.json mode: %v %v", fi.Mode(), err)
	}

	time.Sleep(10 * time.Millisecond)
	put(a, "pa", "1970-01-01")
	put(b, "pb", "1980-01-01")

	// B's token is refused for a pull of both.
	if code, _, errOut := run(t, "pull", "--remote-token", tokB, "--data", data); code != 2 || !strings.Contains(errOut, "name the remote") || !strings.Contains(errOut, a.FHIR) || strings.Contains(errOut, "downloaded") {
		t.Fatalf("pull of two remotes with one token: %d %s", code, errOut)
	}
	if code, _, errOut := run(t, "pull", "https://unknown.example/fhir", "--data", data); code != 2 || !strings.Contains(errOut, "was not cloned") || !strings.Contains(errOut, b.FHIR) {
		t.Fatalf("pull of an unknown remote: %d %s", code, errOut)
	}
	if code, out, errOut := run(t, "pull", b.FHIR+"/", "--remote-token", tokB, "--data", data); code != 0 || !strings.Contains(out, "updated 1,") || strings.Contains(out, a.FHIR) {
		t.Fatalf("pull B: %d\n%s\n%s", code, out, errOut)
	}
	// From another directory, A is pulled with its remembered client id
	// and key.
	t.Chdir(t.TempDir())
	if code, out, errOut := run(t, "pull", a.FHIR, "--data", data); code != 0 || !strings.Contains(out, "updated 1,") {
		t.Fatalf("pull A: %d\n%s\n%s", code, out, errOut)
	}
	// Pulling every remote goes on past one that fails (B needs its
	// token) and reports it.
	time.Sleep(10 * time.Millisecond)
	put(a, "pa", "1970-01-02")
	code, out, errOut := run(t, "pull", "--data", data)
	if code != 1 || !strings.Contains(out, "updated 1,") || !strings.Contains(errOut, "pull "+b.FHIR) {
		t.Fatalf("pull of every remote: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, _ := run(t, "diff", "Patient/pb", "--data", data); code != 0 || !strings.Contains(out, "+ Patient.birthDate") {
		t.Errorf("diff after pull: %d\n%s", code, out)
	}
	// Two exports of one server (system and patient level) share its
	// token: phr pull URL brings both.
	if code, out, errOut := run(t, "clone", b.FHIR, "--patient", "--remote-token", tokB, "--data", data); code != 0 {
		t.Fatalf("clone B at patient level: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut := run(t, "pull", b.FHIR, "--remote-token", tokB, "--data", data); code != 0 || strings.Count(errOut, "phr: pulling "+b.FHIR) != 2 {
		t.Fatalf("pull of B's two exports: %d\n%s\n%s", code, out, errOut)
	}

	// A state file of an earlier phr clone (one remote, in the working
	// directory) is read, and the remote moves to the record.
	old, _ := json.Marshal(map[string]any{"remote": b.FHIR, "transactionTime": "2000-01-01T00:00:00Z", "scope": "system/*.read"})
	if err := os.WriteFile(legacyState, old, 0o600); err != nil {
		t.Fatal(err)
	}
	data2 := filepath.Join(t.TempDir(), "record2")
	code, out, errOut = run(t, "pull", "--remote-token", tokB, "--data", data2)
	if code != 0 || !strings.Contains(errOut, "older phr clone") || !strings.Contains(out, "created 1,") {
		t.Fatalf("pull with a legacy state file: %d\n%s\n%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(data2, "remotes.json")); err != nil {
		t.Errorf("the legacy remote was not moved to the record: %v", err)
	}
	if _, err := os.Stat(legacyState); !os.IsNotExist(err) {
		t.Errorf("the legacy state file stays after the move: %v", err)
	}

	// With --server, the remotes are kept in the user's configuration
	// directory, under the server's FHIR base.
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	c := servertest.Start(t, "sqlite")
	admC := c.AdminToken()
	if code, out, errOut := run(t, "clone", b.FHIR, "--remote-token", tokB, "--server", c.FHIR, "--token", admC); code != 0 || !strings.Contains(out, "created 1,") {
		t.Fatalf("clone B into a server: %d\n%s\n%s", code, out, errOut)
	}
	cfg, _ := os.UserConfigDir()
	raw, err = os.ReadFile(filepath.Join(cfg, "phr", "remotes.json"))
	if err != nil || !strings.Contains(string(raw), `"into": "`+c.FHIR+`"`) || strings.Contains(string(raw), admC) {
		t.Fatalf("remotes of --server: %v\n%s", err, raw)
	}
	if code, out, errOut := run(t, "pull", "--remote-token", tokB, "--server", c.FHIR, "--token", admC); code != 0 || !(strings.Contains(out, "nothing changed") || strings.Contains(out, "updated 0,")) {
		t.Fatalf("pull into a server: %d\n%s\n%s", code, out, errOut)
	}
	// Another record has no remotes.
	if code, _, errOut := run(t, "pull", "--data", t.TempDir()); code != 2 || !strings.Contains(errOut, "nothing was cloned") {
		t.Errorf("pull into a record without remotes: %d %s", code, errOut)
	}
}

// A remote whose export reports errors: what it sent is imported, the
// errors are printed, and its transactionTime is not taken, so the next
// pull asks again from before (what failed may never change again, and a
// later _since would miss it for good). Warnings are printed only.
func TestPullAfterRemoteErrors(t *testing.T) {
	var (
		mu     sync.Mutex
		issue  = "error" // severity of the error file's issue; empty: no error file
		sinces []string
		tt     = "2026-01-01T00:00:00Z"
	)
	mux := http.NewServeMux()
	var srv *httptest.Server
	mux.HandleFunc("GET /fhir/$export", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sinces = append(sinces, r.URL.Query().Get("_since"))
		mu.Unlock()
		w.Header().Set("Content-Location", srv.URL+"/fhir/status")
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /fhir/status", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		errs := []map[string]any{}
		if issue != "" {
			errs = append(errs, map[string]any{"type": "OperationOutcome", "url": srv.URL + "/files/errors"})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"transactionTime": tt, "request": srv.URL + "/fhir/$export", "requiresAccessToken": true,
			"output": []map[string]any{{"type": "Patient", "url": srv.URL + "/files/patients"}}, "error": errs})
	})
	mux.HandleFunc("GET /files/patients", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+ndjson")
		io.WriteString(w, `{"resourceType":"Patient","id":"p1","gender":"male"}`+"\n")
	})
	mux.HandleFunc("GET /files/errors", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/fhir+ndjson")
		fmt.Fprintf(w, `{"resourceType":"OperationOutcome","issue":[{"severity":%q,"code":"exception","diagnostics":"Observation/o7 could not be exported"}]}`+"\n", issue)
		if issue == "error" {
			io.WriteString(w, "not json\n")
		}
	})
	srv = httptest.NewServer(mux)
	defer srv.Close()
	remote := srv.URL + "/fhir"
	data := t.TempDir()
	state := filepath.Join(data, "remotes.json")
	saved := func() remoteState {
		t.Helper()
		f, err := loadRemotes(state, "")
		if err != nil || len(f.Remotes) != 1 {
			t.Fatalf("remotes: %v %+v", err, f)
		}
		return f.Remotes[0]
	}

	code, out, errOut := run(t, "clone", remote, "--remote-token", "t", "--data", data)
	if code != 1 || !strings.Contains(out, "created 1,") || !strings.Contains(errOut, "error: Observation/o7 could not be exported") ||
		!strings.Contains(errOut, "line 2 of error-OperationOutcome-1.ndjson is not an OperationOutcome") ||
		!strings.Contains(errOut, "reported 2 errors") || !strings.Contains(errOut, "from the beginning") {
		t.Fatalf("clone with remote errors: %d\n%s\n%s", code, out, errOut)
	}
	if st := saved(); st.Remote != remote || st.TransactionTime != "" {
		t.Fatalf("after a clone with errors: %+v", st)
	}
	// The errors are gone: the pull asks for everything again, and then
	// takes the transactionTime.
	mu.Lock()
	issue = ""
	mu.Unlock()
	if code, out, errOut := run(t, "pull", "--remote-token", "t", "--data", data); code != 0 || !strings.Contains(out, "unchanged 1,") {
		t.Fatalf("pull: %d\n%s\n%s", code, out, errOut)
	}
	if st := saved(); st.TransactionTime != tt {
		t.Fatalf("after a pull without errors: %+v", st)
	}
	// Errors in a later pull keep the time before it.
	mu.Lock()
	issue, tt = "fatal", "2026-02-01T00:00:00Z"
	mu.Unlock()
	if code, _, errOut := run(t, "pull", "--remote-token", "t", "--data", data); code != 1 || !strings.Contains(errOut, "asks again from 2026-01-01T00:00:00Z") {
		t.Fatalf("pull with errors: %d\n%s", code, errOut)
	}
	// Warnings do not hold the time back.
	mu.Lock()
	issue, tt = "warning", "2026-03-01T00:00:00Z"
	mu.Unlock()
	code, _, errOut = run(t, "pull", "--remote-token", "t", "--data", data)
	if code != 0 || !strings.Contains(errOut, "warning: Observation/o7") {
		t.Fatalf("pull with a warning: %d\n%s", code, errOut)
	}
	if st := saved(); st.TransactionTime != tt {
		t.Fatalf("after a pull with a warning: %+v", st)
	}
	if code, out, errOut := run(t, "pull", "--remote-token", "t", "--data", data); code != 0 {
		t.Fatalf("pull: %d\n%s\n%s", code, out, errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"", "", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"}; !slices.Equal(sinces, want) {
		t.Errorf("_since of the exports: %q, want %q", sinces, want)
	}
}

// redactDB names a record by its database URL without the password, in the
// user part or in the query.
func TestRedactDB(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://phr:s3cret@db.example:5432/phr?sslmode=require": "postgres://phr@db.example:5432/phr?sslmode=require",
		"postgres://db.example/phr?password=s3cret&sslmode=disable": "postgres://db.example/phr?sslmode=disable",
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable":   "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
	} {
		if got := redactDB(in); got != want {
			t.Errorf("redactDB(%q) = %q, want %q", in, got, want)
		}
	}
}
