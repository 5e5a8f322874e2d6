package authserver_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/phr-project/phr/internal/authserver"
	"github.com/phr-project/phr/internal/server/servertest"
)

// TestRateLimits floods the login and token endpoints from one address:
// after the burst (twice the per-minute rate) they answer 429 with
// Retry-After.
func TestRateLimits(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	post := func(path string, form url.Values) *http.Response {
		resp, err := s.Client.PostForm(s.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	check := func(path string, burst int, form url.Values) {
		for i := range burst {
			if r := post(path, form); r.StatusCode == http.StatusTooManyRequests {
				t.Fatalf("%s: request %d of the burst of %d refused", path, i+1, burst)
			}
		}
		r := post(path, form)
		if r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s: request %d after the burst: %d, want 429", path, burst+1, r.StatusCode)
		}
		if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 || n > 60 {
			t.Errorf("%s: Retry-After %q", path, r.Header.Get("Retry-After"))
		}
	}
	check("/login", 2*authserver.DefaultLoginRate, url.Values{"email": {"a@example.org"}, "password": {"guess"}})
	check("/auth/token", 2*authserver.DefaultTokenRate, url.Values{"grant_type": {"client_credentials"}})
}
