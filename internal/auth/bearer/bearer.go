// Package bearer authenticates FHIR requests: it verifies the bearer
// access token (the server's own JWTs, or those of configured external
// OpenID issuers) and turns its claims and scopes into an
// access.Principal that the services check.
package bearer

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/oidc"
	"github.com/phr-project/phr/internal/auth/scope"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/fhir"
)

// Verifier verifies a bearer token and returns its claims.
type Verifier interface {
	Verify(tok string) (token.Claims, error)
}

// Authenticator implements api.Authenticator over the server's token
// issuer and any external verifiers (tried in order after it).
type Authenticator struct {
	Issuer *token.Issuer
	// External verifiers (OpenID issuers); their claims must already be
	// mapped onto token.Claims (scope, patient).
	External []Verifier
}

// Authenticate implements api.Authenticator.
func (a *Authenticator) Authenticate(r *http.Request) (access.Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, unauthorized("this endpoint requires an Authorization: Bearer <token> header")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return nil, unauthorized("the Authorization header must be \"Bearer <token>\"")
	}
	return a.Principal(r.Context(), strings.TrimSpace(tok))
}

// Principal verifies tok and returns the principal it stands for.
func (a *Authenticator) Principal(ctx context.Context, tok string) (access.Principal, error) {
	claims, err := a.Issuer.Verify(tok)
	if err != nil {
		for _, v := range a.External {
			c, verr := v.Verify(tok)
			if verr == nil {
				claims, err = c, nil
				break
			}
			if !errors.Is(verr, oidc.ErrUntrusted) {
				err = verr // an external issuer owns this token: its reason is the useful one
			}
		}
	}
	if err != nil {
		return nil, unauthorized("the access token is not valid: " + err.Error())
	}
	return NewPrincipal(claims)
}

func unauthorized(msg string) error {
	return &fhir.Error{Status: http.StatusUnauthorized, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: msg}}}
}

// Principal is an authenticated token holder.
type Principal struct {
	Claims token.Claims
	Grants scope.Grants
	// patient is the compartment the holder is confined to ("" if none).
	patient string
}

// NewPrincipal builds the principal of verified claims. A token with any
// patient/ scope, or issued to a patient user (fhirUser Patient/x), is
// confined to its patient's compartment; such a token without a patient
// is refused.
func NewPrincipal(c token.Claims) (*Principal, error) {
	g, err := parseScope(c.Scope)
	if err != nil {
		return nil, unauthorized("the access token's scope is malformed: " + err.Error())
	}
	p := &Principal{Claims: c, Grants: g}
	if strings.HasPrefix(c.FHIRUser, "Patient/") || g.NeedsPatient() {
		p.patient = c.Patient
		if p.patient == "" {
			p.patient = strings.TrimPrefix(c.FHIRUser, "Patient/")
		}
		if p.patient == "" || strings.Contains(p.patient, "/") {
			return nil, &fhir.Error{Status: http.StatusForbidden, Issues: []fhir.Issue{{Severity: "error", Code: "forbidden",
				Diagnostics: "the access token has patient/ scopes but no patient"}}}
		}
	}
	return p, nil
}

// grants caches the parsed scope lists of tokens: every request builds its
// principal anew from the (cached) verified claims, and a server sees few
// distinct scope lists. Grants are never modified once parsed, so one
// value serves every principal with that list.
var grants struct {
	m sync.Map // scope list -> scope.Grants
	n atomic.Int32
}

// maxGrants bounds the grants cache; lists beyond it are parsed each time.
const maxGrants = 1024

// parseScope is scope.Parse through the grants cache (errors are not
// cached: they end the request anyway).
func parseScope(list string) (scope.Grants, error) {
	if g, ok := grants.m.Load(list); ok {
		return g.(scope.Grants), nil
	}
	g, err := scope.Parse(list)
	if err != nil {
		return g, err
	}
	if grants.n.Load() < maxGrants {
		if _, loaded := grants.m.LoadOrStore(list, g); !loaded {
			grants.n.Add(1)
		}
	}
	return g, nil
}

var interactions = map[access.Interaction]scope.Interaction{
	access.Create: scope.Create,
	access.Read:   scope.Read,
	access.Update: scope.Update,
	access.Delete: scope.Delete,
	access.Search: scope.Search,
}

// Allows implements access.Principal. typ "*" asks about every type at once
// (only wildcard scopes answer yes).
func (p *Principal) Allows(i access.Interaction, typ string) bool {
	si, ok := interactions[i]
	return ok && p.Grants.Allows(si, typ)
}

// Patient implements access.Principal.
func (p *Principal) Patient() string { return p.patient }

// Filters implements access.Principal: the v2 scope queries of the rules
// that grant reads of typ; nil when one rule grants it unfiltered.
func (p *Principal) Filters(typ string) []url.Values {
	a := p.Grants.Access(scope.Read, typ)
	if !a.Allowed {
		return nil
	}
	var out []url.Values
	for _, r := range a.Rules {
		if len(r.Filter) == 0 {
			return nil
		}
		q := url.Values{}
		for _, f := range r.Filter {
			q.Add(f.Name, f.Value)
		}
		out = append(out, q)
	}
	return out
}

// Subject implements access.Principal.
func (p *Principal) Subject() string {
	switch {
	case p.Claims.FHIRUser != "":
		return p.Claims.FHIRUser
	case p.Claims.ClientID != "":
		return "client:" + p.Claims.ClientID
	case p.Claims.Subject != "":
		return p.Claims.Subject
	}
	return "unknown"
}

// ClientID returns the OAuth client the token was issued to ("" if none).
func (p *Principal) ClientID() string { return p.Claims.ClientID }
