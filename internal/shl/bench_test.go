package shl_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
)

// BenchmarkManifest measures a recipient's manifest request over HTTP on
// SQLite (summary file embedded): without a passcode, and with one (an
// argon2id verification and two atomic attempt updates per request).
//
//	go test -run '^$' -bench Manifest -benchtime 200x ./internal/shl/
func BenchmarkManifest(b *testing.B) {
	s := servertest.Start(b, "sqlite")
	admin := s.AdminToken()
	for _, r := range resources("pa", "Alpha") {
		var m map[string]any
		json.Unmarshal([]byte(r), &m)
		s.Do("PUT", m["resourceType"].(string)+"/"+m["id"].(string), admin, r)
	}
	for _, c := range []struct{ name, passcode string }{{"open", ""}, {"passcode", "4711"}} {
		b.Run(c.name, func(b *testing.B) {
			resp := s.Do("POST", "/shl", admin, map[string]any{"patient": "pa", "passcode": c.passcode, "content": []map[string]any{{"kind": "summary"}}})
			var l createdLink
			json.Unmarshal(resp.Body, &l)
			url := l.URL
			body := `{"recipient":"bench","passcode":"` + c.passcode + `"}`
			b.ResetTimer()
			for b.Loop() {
				r, err := http.Post(url, "application/json", strings.NewReader(body))
				if err != nil || r.StatusCode != 200 {
					b.Fatalf("manifest: %v %v", err, r.StatusCode)
				}
				r.Body.Close()
			}
		})
	}
}
