package bulk_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver to watch the job table

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/store/storetest"
)

// replica is a `phr serve` process.
type replica struct {
	cmd  *exec.Cmd
	base string
}

func startReplica(t *testing.T, bin, dbURL, data string) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--db", dbURL, "--data", data, "--addr", addr, "--workers", "1",
		"--job-lease", "2s", "--export-rate", "10ms", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "PHR_BULK_ROW_DELAY=8ms")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{cmd: cmd, base: "http://" + addr}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		if resp, err := http.Get(r.base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r
			}
		}
		if i > 300 {
			t.Fatal("phr serve did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func buildPHR(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "phr")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/phr").CombinedOutput(); err != nil {
		t.Fatalf("build phr: %v\n%s", err, out)
	}
	return bin
}

// Two `phr serve` replicas share one PostgreSQL database (and one blob
// directory, as they would share a volume or a bucket). The replica that
// claimed an export is killed with SIGKILL in the middle of it; its lease
// runs out and the other replica runs the export again to completion.
func TestReplicaTakesOverKilledExport(t *testing.T) {
	if testing.Short() {
		t.Skip("builds phr and runs two servers")
	}
	dbURL := storetest.NewPostgresURL(t)
	data := t.TempDir()
	ctx := context.Background()
	// Seed 300 patients with an observation each.
	app, err := server.Open(ctx, server.Config{DB: dbURL, DataDir: data, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	var entries []string
	for i := 0; i < 300; i++ {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"r%d","gender":"other"},"request":{"method":"PUT","url":"Patient/r%d"}}`, i, i),
			fmt.Sprintf(`{"resource":{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/r%d"}},"request":{"method":"PUT","url":"Observation/o%d"}}`, i, i, i))
	}
	b, err := fhirjson.Parse([]byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := app.Records.ProcessBundleTree(access.With(ctx, access.System{}), b, nil); err != nil {
		t.Fatal(err)
	}
	tok, err := app.Tokens.Sign(token.Claims{Subject: "replica-test", Scope: "system/*.read", Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	app.Close()

	bin := buildPHR(t)
	reps := []*replica{startReplica(t, bin, dbURL, data), startReplica(t, bin, dbURL, data)}
	get := func(method, u string, headers ...string) (int, http.Header, []byte) {
		req, _ := http.NewRequest(method, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, body
	}
	st, h, body := get("GET", reps[0].base+"/fhir/$export?_type=Patient,Observation", "Accept", "application/fhir+json", "Prefer", "respond-async")
	if st != 202 {
		t.Fatalf("kick-off: %d %s", st, body)
	}
	status := h.Get("Content-Location")
	id := status[strings.LastIndex(status, "/")+1:]

	// Find the replica running it (its worker id holds its pid) once it
	// has made progress.
	pg, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	pgQueryRow := func(_ *testing.T, _ string, q string, args ...any) *sql.Row { return pg.QueryRow(q, args...) }
	var victim, survivor *replica
	deadline := time.Now().Add(30 * time.Second)
	for victim == nil {
		if time.Now().After(deadline) {
			t.Fatal("no replica started the export")
		}
		time.Sleep(50 * time.Millisecond)
		var worker, state string
		var prog []byte
		if err := pgQueryRow(t, dbURL, `SELECT worker, state, COALESCE(progress, '') FROM job WHERE id = $1`, id).Scan(&worker, &state, &prog); err != nil {
			t.Fatal(err)
		}
		if state != "running" || !strings.Contains(string(prog), `"done":`) || strings.Contains(string(prog), `"done":0`) {
			continue
		}
		for i, r := range reps {
			if strings.Contains(worker, fmt.Sprintf("-%d-", r.cmd.Process.Pid)) {
				victim, survivor = r, reps[1-i]
			}
		}
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	victim.cmd.Wait()

	// The survivor answers the status URL (any replica can) and finishes.
	surv := strings.Replace(status, victim.base, survivor.base, 1)
	var m manifest
	for {
		if time.Now().After(deadline.Add(60 * time.Second)) {
			t.Fatal("the surviving replica did not finish the export")
		}
		time.Sleep(100 * time.Millisecond)
		st, _, body := get("GET", surv)
		if st == 202 {
			continue
		}
		if st != 200 {
			t.Fatalf("status on the survivor: %d %s", st, body)
		}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		break
	}
	if got := counts(&m); got["Patient"] != 300 || got["Observation"] != 300 {
		t.Fatalf("counts after takeover %v", got)
	}
	var attempts int
	var worker string
	if err := pgQueryRow(t, dbURL, `SELECT attempts, worker FROM job WHERE id = $1`, id).Scan(&attempts, &worker); err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || !strings.Contains(worker, fmt.Sprintf("-%d-", survivor.cmd.Process.Pid)) {
		t.Fatalf("attempts %d worker %s (survivor pid %d)", attempts, worker, survivor.cmd.Process.Pid)
	}
	// The files download from the survivor.
	for _, it := range m.Output {
		u := strings.Replace(it.URL, victim.base, survivor.base, 1)
		st, _, body := get("GET", u)
		if st != 200 || strings.Count(string(body), "\n") != it.Count {
			t.Fatalf("download %s: %d, %d lines", u, st, strings.Count(string(body), "\n"))
		}
	}
}
