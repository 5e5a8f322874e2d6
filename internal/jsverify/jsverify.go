// Package jsverify runs the Node scripts in tools/jsverify from Go tests, so
// that what phr encrypts or signs is checked by an implementation we did not
// write (the npm "jose" package) rather than by our own code.
//
// Every script reads one JSON document on stdin and writes one on stdout (see
// tools/jsverify/README.md). When node or the script's dependencies are
// missing, Run skips the test with a notice saying how to install them, so the
// default `go test ./...` still passes on a machine without Node.
package jsverify

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Dir is the scripts' folder, relative to the repository root.
const Dir = "tools/jsverify"

// Run runs node on tools/jsverify/<script> with in, encoded as JSON, on its
// standard input and decodes its standard output into out. It skips t when
// node or tools/jsverify/node_modules is absent and fails t when the script
// exits non-zero or prints something that is not JSON.
func Run(t testing.TB, script string, in, out any) {
	t.Helper()
	dir, err := scriptsDir()
	if err != nil {
		t.Fatalf("jsverify: %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skipf("jsverify: node is not on the PATH; install Node.js and run `npm ci --prefix %s` to check against the npm jose package", Dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		t.Skipf("jsverify: %s/node_modules is missing; run `npm ci --prefix %s` to check against the npm jose package", Dir, Dir)
	}
	input, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("jsverify: encode input for %s: %v", script, err)
	}
	cmd := exec.CommandContext(t.Context(), node, filepath.Join(dir, script))
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("jsverify: node %s: %v\n%s", script, err, stderr.Bytes())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("jsverify: node %s printed invalid JSON: %v\n%.500s", script, err, stdout.Bytes())
	}
}

// scriptsDir finds tools/jsverify by walking up from the working directory
// (a package directory under go test) to the module root.
func scriptsDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, filepath.FromSlash(Dir)), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
