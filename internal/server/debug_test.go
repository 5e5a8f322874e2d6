package server_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
)

// TestDebugAddr: with --debug-addr the runtime profiles are served on that
// listener, and never on the public one.
func TestDebugAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.DebugAddr = addr }})
	get := func(url string) (int, string) {
		t.Helper()
		var resp *http.Response
		for i := 0; i < 50; i++ { // the debug listener starts with Serve
			if resp, err = http.Get(url); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + addr + "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("debug listener: %d %.200s", code, body)
	}
	if code, body := get(s.URL + "/debug/pprof/"); code == 200 || strings.Contains(body, "goroutine") {
		t.Errorf("public listener serves profiles: %d %.200s", code, body)
	}
}
