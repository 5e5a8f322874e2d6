// Package s3test starts a real S3-compatible server for tests: versitygw
// (the Versity S3 Gateway, Apache-2.0) with its POSIX backend in a
// temporary directory, on 127.0.0.1. The binary is taken from
// PHR_VERSITYGW, or $(go env GOPATH)/bin/phr-test-tools/versitygw, or
// built there from the Go module proxy (`go install`, once per machine;
// .ci/run does it before the tests). Tests skip with a notice when it
// cannot be had.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Module is the versitygw command the helper builds.
const Module = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  string
)

// Binary returns the versitygw binary, building it when needed, or ""
// and why not.
func Binary() (string, string) {
	buildOnce.Do(func() {
		if p := os.Getenv("PHR_VERSITYGW"); p != "" {
			binPath = p
			return
		}
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			buildErr = "go env GOPATH: " + err.Error()
			return
		}
		dir := filepath.Join(strings.TrimSpace(string(out)), "bin", "phr-test-tools")
		p := filepath.Join(dir, "versitygw")
		if _, err := os.Stat(p); err == nil {
			binPath = p
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", Module)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
		cmd.Dir = os.TempDir()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = "go install " + Module + ": " + err.Error() + ": " + lastLine(string(out))
			return
		}
		binPath = p
	})
	return binPath, buildErr
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Server is a running versitygw.
type Server struct {
	// Endpoint is host:port.
	Endpoint string
	// Root is the directory the POSIX backend keeps buckets in (a bucket
	// is Root/<bucket>, an object Root/<bucket>/<key>).
	Root string
	// Bucket is a bucket created for the test.
	Bucket string
	// URL is the phr blob store URL for Bucket under the prefix "phr".
	URL string
	cmd *exec.Cmd
}

// Stop kills the server (tests of storage failures).
func (s *Server) Stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// Start starts versitygw with a fresh bucket, sets AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY for the test (so the blob store's credential chain
// finds them), and stops the server when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, why := Binary()
	if bin == "" {
		t.Skip("notice: no S3-compatible server for this test (" + why + "); skipping")
	}
	root := t.TempDir()
	var b [6]byte
	rand.Read(b[:])
	bucket := "phr-test-" + hex.EncodeToString(b[:])
	if err := os.Mkdir(filepath.Join(root, bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	access, secret := "phrtest"+hex.EncodeToString(b[:3]), hex.EncodeToString(b[:])+"secret-for-tests"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "--access", access, "--secret", secret, "--port", addr, "--quiet", "posix", root)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatalf("versitygw did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	return &Server{Endpoint: addr, Root: root, Bucket: bucket,
		URL: "s3://" + bucket + "/phr?endpoint=" + addr + "&insecure=true", cmd: cmd}
}
