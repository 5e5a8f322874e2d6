package authserver_test

import (
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/jsverify"
	"github.com/phr-project/phr/internal/server/servertest"
)

// TestNodeBackendClient has an independent client (tools/jsverify/backend.mjs,
// npm jose + fetch) sign ES384 and RS384 assertions, get tokens and read data.
func TestNodeBackendClient(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	pat := create(t, s, "Patient", `{"resourceType":"Patient","name":[{"family":"Node"}]}`)
	for _, alg := range []jose.SignatureAlgorithm{jose.ES384, jose.RS384} {
		t.Run(string(alg), func(t *testing.T) {
			b := newBackend(t, alg, "node-"+string(alg))
			b.register(t, s, "system/*.rs", nil)
			priv, err := json.Marshal(jose.JSONWebKey{Key: b.key, KeyID: b.kid, Algorithm: string(alg)})
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				TokenStatus    int            `json:"tokenStatus"`
				CacheControl   string         `json:"cacheControl"`
				HasAccessToken bool           `json:"hasAccessToken"`
				Token          map[string]any `json:"token"`
				ReadStatus     int            `json:"readStatus"`
				ResourceType   string         `json:"resourceType"`
				ID             string         `json:"id"`
			}
			for _, scope := range []string{"system/*.rs", "system/*.read"} {
				jsverify.Run(t, "backend.mjs", map[string]any{"tokenUrl": s.URL + "/auth/token", "fhirBase": s.FHIR, "clientId": b.id,
					"alg": string(alg), "privateJwk": json.RawMessage(priv), "scope": scope, "read": "Patient/" + pat}, &out)
				if out.TokenStatus != 200 || !out.HasAccessToken || out.CacheControl != "no-store" {
					t.Fatalf("%s token: %+v", scope, out)
				}
				if out.Token["scope"] != scope && !(scope == "system/*.read" && out.Token["scope"] == "system/*.rs") {
					t.Errorf("asked %s, granted %v", scope, out.Token["scope"])
				}
				if out.ReadStatus != 200 || out.ResourceType != "Patient" || out.ID != pat {
					t.Fatalf("%s read: %+v", scope, out)
				}
			}
		})
	}
}
