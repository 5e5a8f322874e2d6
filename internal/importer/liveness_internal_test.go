package importer

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/store/sqldb"
)

func TestAbandoned(t *testing.T) {
	now := time.Now()
	fresh := sqldb.Micros(now.Add(-5 * time.Second))
	old := sqldb.Micros(now.Add(-batchLease - time.Second))
	me := strings.Fields(owner)
	// A process that has exited: its id is free (until reused).
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := cmd.Process.Pid
	cases := []struct {
		name  string
		owner string
		hb    int64
		want  bool
	}{
		{"recorded before owners", "", fresh, true},
		{"this process", owner, old, false},
		{"an earlier process with this id", fmt.Sprintf("%s %s 1", me[0], me[1]), fresh, true},
		{"a process of this host that exited", fmt.Sprintf("%s %d 1", me[0], gone), fresh, true},
		{"a live process of this host, fresh", fmt.Sprintf("%s %d 1", me[0], os.Getppid()), fresh, false},
		{"a live process of this host, silent", fmt.Sprintf("%s %d 1", me[0], os.Getppid()), old, true},
		{"another host, fresh", "other-host 1 1", fresh, false},
		{"another host, silent", "other-host 1 1", old, true},
	}
	for _, c := range cases {
		if got := abandoned(c.owner, c.hb, now); got != c.want {
			t.Errorf("%s: abandoned = %v, want %v", c.name, got, c.want)
		}
	}
}
