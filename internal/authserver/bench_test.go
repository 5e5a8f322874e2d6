package authserver_test

import (
	"net/url"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
)

// BenchmarkClientCredentials measures the token endpoint over HTTP:
// assertion parse + ES384 verification + jti insert + scope narrowing +
// access token signing, one fresh assertion per token.
//
//	go test -run XXX -bench ClientCredentials ./internal/authserver
func BenchmarkClientCredentials(b *testing.B) {
	s := servertest.Start(b, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.TokenRate = -1 }})
	be := newBackend(b, jose.ES384, "bench-1")
	be.register(b, s, "system/*.rs", nil)
	assertions := make([]string, b.N)
	for i := range assertions {
		assertions[i] = be.assertion(b, s.URL+"/auth/token", assertionOpts{})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := s.Client.PostForm(s.URL+"/auth/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"system/*.rs"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertions[i]}})
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("token %d: status %d", i, resp.StatusCode)
		}
	}
}
