package importer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/store/postgres"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/sqlite"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/synthea"
)

// phrBinary builds cmd/phr into a temporary directory.
func phrBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "phr")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/phr-project/phr/cmd/phr")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// serve starts `phr serve` on a free port and returns it and its base URL.
// extra adds flags (--db URL).
func serve(t *testing.T, bin, data string, extra ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data", data, "--addr", "127.0.0.1:0", "--log-level", "warn"}, extra...)...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "phr listening on "); ok {
			go io.Copy(io.Discard, stdout)
			return cmd, strings.TrimSpace(rest)
		}
	}
	t.Fatal("phr serve did not say where it listens")
	return nil, ""
}

func httpDo(t *testing.T, method, u, tok string, body io.Reader, headers ...string) (int, []byte, error) {
	req, _ := http.NewRequest(method, u, body)
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// The server is killed (SIGKILL) in the middle of a large import; after a
// restart, running the same import again completes it: every resource is
// there once, nothing committed is lost or duplicated, and every reference
// resolves (on PostgreSQL two chunks are written at a time, and the later
// must never commit without the earlier). On each store.
func TestKillMidImport(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the phr binary")
	}
	dir := synthea.Require(t)
	n := 15
	if os.Getenv("PHR_LONG") != "" {
		n = 120
	}
	files, err := synthea.Files(dir, n)
	if err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "synthea.ndjson")
	f, _ := os.Create(input)
	total := syntheaNDJSON(t, files, f)
	f.Close()
	bin := phrBinary(t)
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) { killMidImport(t, bin, input, n, total, d) })
	}
}

func killMidImport(t *testing.T, bin, input string, n, total int, dialect string) {
	data := t.TempDir()
	var dbArgs []string
	if dialect == "postgres" {
		dbArgs = []string{"--db", storetest.NewPostgresURL(t)}
	}
	out, err := exec.Command(bin, append([]string{"token", "--data", data, "--scope", "system/*.*"}, dbArgs...)...).Output()
	if err != nil {
		t.Fatalf("phr token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	srv, base := serve(t, bin, data, dbArgs...)
	importOnce := func(base string) ([]byte, error) {
		body, _ := os.Open(input)
		defer body.Close()
		_, b, err := httpDo(t, "POST", base+"/fhir/Bundle/$import?source=synthea", tok, body, "Content-Type", "application/fhir+ndjson", "Accept", "application/x-ndjson")
		return b, err
	}
	done := make(chan error, 1)
	go func() { _, err := importOnce(base); done <- err }()
	// Kill once some chunks are committed.
	deadline := time.Now().Add(2 * time.Minute)
	var committed float64
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		_, b, err := httpDo(t, "GET", base+"/fhir/$import-batches?batch=1", tok, nil)
		if err != nil {
			continue
		}
		if c := batchCount(b, "created"); c >= 1000 {
			committed = c
			break
		}
	}
	if committed == 0 {
		t.Fatal("the import committed nothing within 2 minutes")
	}
	if err := srv.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	if err := <-done; err == nil {
		t.Log("the import finished before the kill landed; the test still checks the re-run")
	}
	_, base = serve(t, bin, data, dbArgs...)
	_, b, err := httpDo(t, "GET", base+"/fhir/$import-batches?batch=1", tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	killed := batchCount(b, "created")
	t.Logf("%d resources; killed after %v were committed (batch says %v)", total, committed, killed)
	if killed >= float64(total) {
		t.Skip("the import completed before the kill")
	}
	// The killed batch is no longer "running": the restarted server marked
	// it interrupted, with the time its process was last seen, and the
	// log says so.
	if st := batchString(b, "status"); st != "interrupted" || batchString(b, "finished") == "" {
		t.Errorf("killed batch: status %q finished %q, want interrupted with a time: %.600s", st, batchString(b, "finished"), b)
	}
	logOut, err := exec.Command(bin, "log", "--server", base+"/fhir", "--token", tok).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^batch 1 .* interrupted at \d{4}-`).Match(logOut) {
		t.Errorf("phr log after the kill: %v\n%s", err, logOut)
	}
	resp, err := importOnce(base)
	if err != nil {
		t.Fatal(err)
	}
	sum, issues := parseSummary(t, resp)
	t.Logf("re-run: %v", sum)
	if sum["created"]+killed != float64(total) || sum["unchanged"] != killed || sum["rejected"] != 0 || sum["conflicts"] != 0 || sum["updated"] != 0 {
		t.Errorf("re-run after kill: %v (killed run committed %v of %d): %v", sum, killed, total, issues[:min(len(issues), 5)])
	}
	// Every patient exactly once.
	_, b, _ = httpDo(t, "GET", base+"/fhir/Patient?_summary=count", tok, nil)
	var bundle struct{ Total int }
	json.Unmarshal(b, &bundle)
	if bundle.Total != n {
		t.Errorf("%d patients after the re-run, want %d: %.300s", bundle.Total, n, b)
	}
	// A third run changes nothing.
	resp, _ = importOnce(base)
	sum, _ = parseSummary(t, resp)
	want(t, "third run", sum, "created", 0)
	want(t, "third run", sum, "unchanged", float64(total))
	// Every reference of every stored resource names a stored resource.
	var db *sqldb.DB
	ctx := context.Background()
	if dialect == "postgres" {
		db, err = postgres.Open(ctx, dbArgs[1])
	} else {
		db, err = sqlite.Open(ctx, filepath.Join(data, "phr.db"))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var refs, dangling int
	if err := db.QueryRow(ctx, `SELECT COUNT(*), COUNT(*) - COUNT(x.rid) FROM idx_ref r
		LEFT JOIN resource x ON x.type = r.target_type AND x.id = r.target_id
		WHERE r.target_type <> '' AND r.target_id <> ''`).Scan(&refs, &dangling); err != nil {
		t.Fatal(err)
	}
	if refs < total || dangling != 0 {
		t.Errorf("%d of %d indexed references name no stored resource", dangling, refs)
	}
	checkRefTargets(t, db)
}

// batchPart is a part of the first batch in a $import-batches answer.
type batchPart struct {
	Name         string
	ValueCode    string
	ValueInstant string
	ValueString  string
	ValueInteger float64
}

// firstBatchPart finds the named part of the first batch in a
// $import-batches answer (the zero part when there is none).
func firstBatchPart(b []byte, name string) batchPart {
	var p struct {
		Parameter []struct {
			Name string
			Part []batchPart
		}
	}
	json.Unmarshal(b, &p)
	for _, x := range p.Parameter {
		if x.Name == "batch" {
			for _, y := range x.Part {
				if y.Name == name {
					return y
				}
			}
		}
	}
	return batchPart{}
}

// batchString reads a text (code, instant, string) of the first batch in
// a $import-batches answer.
func batchString(b []byte, name string) string {
	y := firstBatchPart(b, name)
	return y.ValueCode + y.ValueInstant + y.ValueString
}

// batchCount reads a count of the first batch in a $import-batches answer.
func batchCount(b []byte, name string) float64 { return firstBatchPart(b, name).ValueInteger }
