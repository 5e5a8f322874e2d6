package authserver_test

import (
	"context"
	"crypto"
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/bulkclient"
	"github.com/phr-project/phr/internal/server/servertest"
)

// TestBulkClientBackendServices: phr's own bulk client (the `phr bulk
// export --client-id --key` path) finds the token endpoint by SMART
// discovery and gets tokens with RS384 and ES384 keys from this server.
func TestBulkClientBackendServices(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	pat := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	for _, alg := range []jose.SignatureAlgorithm{jose.RS384, jose.ES384} {
		t.Run(string(alg), func(t *testing.T) {
			b := newBackend(t, alg, "bulk-"+string(alg))
			b.register(t, s, "system/*.read", nil)
			be := &bulkclient.Backend{ClientID: b.id, Base: s.FHIR, Scope: "system/*.read", Key: b.key.(crypto.Signer), KeyID: b.kid, HTTP: s.Client}
			tok, err := be.Token(context.Background())
			if err != nil {
				t.Fatalf("token: %v", err)
			}
			if r := s.Do("GET", "Patient/"+pat, tok, nil); r.Status != http.StatusOK {
				t.Fatalf("read with the bulk client's token: %d", r.Status)
			}
		})
	}
}
