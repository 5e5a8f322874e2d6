package bearer

import (
	"net/http"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/fhir"
)

// TestPrincipalsShareParsedScopes: principals built from the same scope
// list (served from the grants cache after the first) grant exactly what
// their own list says, and a malformed list is refused every time.
func TestPrincipalsShareParsedScopes(t *testing.T) {
	for round := range 3 {
		p, err := NewPrincipal(token.Claims{Subject: "a", Scope: "system/Patient.rs system/Observation.r"})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !p.Allows(access.Read, "Patient") || !p.Allows(access.Search, "Patient") || !p.Allows(access.Read, "Observation") {
			t.Errorf("round %d: reads not allowed", round)
		}
		if p.Allows(access.Search, "Observation") || p.Allows(access.Create, "Patient") || p.Allows(access.Read, "Encounter") {
			t.Errorf("round %d: more allowed than the scopes say", round)
		}
		q, err := NewPrincipal(token.Claims{Subject: "b", Scope: "patient/*.rs", Patient: "p1"})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if q.Patient() != "p1" || !q.Allows(access.Read, "Encounter") || q.Allows(access.Update, "Encounter") {
			t.Errorf("round %d: patient token: patient %q, read %v, update %v", round, q.Patient(), q.Allows(access.Read, "Encounter"), q.Allows(access.Update, "Encounter"))
		}
		if _, err := NewPrincipal(token.Claims{Subject: "c", Scope: "patient/*.rs"}); fhir.AsError(err).Status != http.StatusForbidden {
			t.Errorf("round %d: patient scope without a patient: %v", round, err)
		}
		if _, err := NewPrincipal(token.Claims{Subject: "d", Scope: "system/Patient.qq"}); fhir.AsError(err).Status != http.StatusUnauthorized {
			t.Errorf("round %d: malformed scope accepted: %v", round, err)
		}
	}
}
