package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRequestLogRedactsSecrets: the debug request log must not print a
// SMART Health Link's manifest id or file token, which are the secret.
func TestRequestLogRedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)
	h := logRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for _, p := range []string{"/shl/m/SECRETMANIFEST", "/shl/f/SECRETFILE", "/fhir/Patient/p1"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", p+"?q=x", nil))
	}
	out := buf.String()
	if strings.Contains(out, "SECRET") {
		t.Fatalf("secret in the log:\n%s", out)
	}
	if !strings.Contains(out, "/shl/m/[redacted]") || !strings.Contains(out, "/fhir/Patient/p1") {
		t.Fatalf("log lines missing:\n%s", out)
	}
}
