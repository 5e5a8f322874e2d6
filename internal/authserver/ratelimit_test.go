package authserver_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/authserver"
	"github.com/phr-project/phr/internal/server/servertest"
)

// TestRateLimits floods the login and token endpoints from one address:
// after the burst (twice the per-minute rate), and what refilled while it
// was sent, they answer 429 with Retry-After.
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
	// check sends the burst, which must all pass, then keeps sending until
	// one is refused. The limiter refills at rate per minute meanwhile (a
	// loaded machine can take seconds for the burst), so the number that
	// pass after the burst may not exceed what refilled in the time taken.
	check := func(path string, rate int, form url.Values) {
		burst := 2 * rate
		start := time.Now()
		for i := range burst {
			if r := post(path, form); r.StatusCode == http.StatusTooManyRequests {
				t.Fatalf("%s: request %d of the burst of %d refused", path, i+1, burst)
			}
		}
		for extra := 0; ; extra++ {
			r := post(path, form)
			if r.StatusCode == http.StatusTooManyRequests {
				if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 || n > 60 {
					t.Errorf("%s: Retry-After %q", path, r.Header.Get("Retry-After"))
				}
				return
			}
			if allowed := int(time.Since(start).Minutes()*float64(rate)) + 1; extra >= allowed {
				t.Fatalf("%s: %d requests after the burst of %d went through in %v; at %d per minute at most %d may",
					path, extra+1, burst, time.Since(start).Round(time.Millisecond), rate, allowed)
			}
		}
	}
	check("/login", authserver.DefaultLoginRate, url.Values{"email": {"a@example.org"}, "password": {"guess"}})
	check("/auth/token", authserver.DefaultTokenRate, url.Values{"grant_type": {"client_credentials"}})
}
