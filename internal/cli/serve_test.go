package cli

import (
	"strings"
	"testing"
)

// TestServeRejectsBadNumbers: the numeric server flags refuse what they
// cannot mean, before anything is opened.
func TestServeRejectsBadNumbers(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--db-readers", "-1"},
		{"--db-readers", "two"},
		{"--db-max-conns", "-3"},
		{"--procs", "-1"},
		{"--procs", "one"},
	} {
		code, _, errOut := run(t, append([]string{"serve", "--data", dir, "--addr", "127.0.0.1:0"}, args...)...)
		if code != 2 || !strings.Contains(errOut, args[0]) {
			t.Errorf("serve %v: exit %d, %q", args, code, errOut)
		}
	}
}
