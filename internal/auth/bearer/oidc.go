package bearer

import (
	"context"
	"time"

	"github.com/phr-project/phr/internal/auth/oidc"
	"github.com/phr-project/phr/internal/auth/scope"
	"github.com/phr-project/phr/internal/auth/token"
)

// OIDC adapts an oidc.Verifier (external OpenID issuers) to Verifier, so
// an organisation's own identity provider can sign the tokens its users
// bring to the FHIR API.
type OIDC struct {
	Verifier *oidc.Verifier
	// DefaultScope is granted when a token carries no SMART resource scope
	// (IdPs usually issue only "openid profile email"); "" grants nothing
	// then. With the issuer's patient claim it is typically patient/*.rs.
	DefaultScope string
	// Timeout bounds fetching the issuer's keys (10 s when zero).
	Timeout time.Duration
}

// Verify implements Verifier.
func (o OIDC) Verify(tok string) (token.Claims, error) {
	d := o.Timeout
	if d == 0 {
		d = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	id, err := o.Verifier.Verify(ctx, tok, time.Now())
	if err != nil {
		return token.Claims{}, err
	}
	sc := id.Scope
	if g, err := scope.Parse(sc); err != nil || !hasResourceScope(g) {
		sc = o.DefaultScope
	}
	return token.Claims{Issuer: id.Issuer, Subject: id.Subject, Scope: sc, Patient: id.Patient, Expiry: id.Expiry}, nil
}

func hasResourceScope(g scope.Grants) bool {
	for _, s := range g.Scopes() {
		if s.Kind == scope.Resource {
			return true
		}
	}
	return false
}
