package main_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildPHR builds the phr binary once per test binary run.
func buildPHR(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "phr")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build phr: %v", err)
	}
	return bin
}

// TestServeTokenShutdown walks the README: serve on its defaults (in a
// temp dir), wait for /healthz, make a token with `phr token`, call the
// API, then SIGTERM: the server finishes and exits cleanly.
func TestServeTokenShutdown(t *testing.T) {
	bin := buildPHR(t)
	dir := t.TempDir()
	srv := exec.Command(bin, "serve", "--addr", "127.0.0.1:0")
	srv.Dir = dir
	stdout, _ := srv.StdoutPipe()
	srv.Stderr = io.Discard
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	// The banner says where it listens and how to get a token.
	sc := bufio.NewScanner(stdout)
	var base, tokenHint string
	re := regexp.MustCompile(`FHIR base:\s+(\S+)/fhir`)
	for sc.Scan() {
		line := sc.Text()
		if m := re.FindStringSubmatch(line); m != nil {
			base = m[1]
		}
		if strings.HasPrefix(line, "Get a token:") {
			tokenHint = line
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if base == "" || !strings.Contains(tokenHint, "phr token --data phr-data") {
		t.Fatalf("banner: base %q, token hint %q", base, tokenHint)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := http.Get(base + "/healthz")
		if err == nil && r.StatusCode == 200 {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz never answered 200")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tokCmd := exec.Command(bin, "token", "--data", "phr-data", "--scope", "system/*.*")
	tokCmd.Dir = dir
	out, err := tokCmd.Output()
	if err != nil {
		t.Fatalf("phr token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	req, _ := http.NewRequest("GET", base+"/fhir/Patient/none", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 404 {
		t.Fatalf("GET with the CLI's token: %d, want 404", r.StatusCode)
	}
	// An env variable works like its flag.
	bad := exec.Command(bin, "token", "--scope", "patient/*.rs")
	bad.Dir = dir
	bad.Env = append(os.Environ(), "PHR_DATA=phr-data")
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "--patient") {
		t.Fatalf("patient scope without --patient: %v %s", err, out)
	}
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server exit after SIGTERM: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("server did not stop on SIGTERM")
	}
}
