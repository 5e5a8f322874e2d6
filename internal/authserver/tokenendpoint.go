package authserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/auth/clientauth"
	"github.com/phr-project/phr/internal/auth/oauth"
	"github.com/phr-project/phr/internal/auth/pkce"
	"github.com/phr-project/phr/internal/auth/scope"
	"github.com/phr-project/phr/internal/auth/secret"
	"github.com/phr-project/phr/internal/auth/token"
)

// maxForm bounds token and login request bodies.
const maxForm = 64 << 10

// tokenResponse is the RFC 6749 5.1 / SMART token response.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Patient      string `json:"patient,omitempty"`
	// NeedPatientBanner tells an app launched standalone by a patient that
	// it need not show whose record it is.
	NeedPatientBanner *bool `json:"need_patient_banner,omitempty"`
	// IDToken is the OpenID Connect ID token (scope openid).
	IDToken string `json:"id_token,omitempty"`
}

func (s *Server) tokenEndpoint(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if ok, wait := s.tokenLimit.Allow(s.o.ClientIP.From(r)); !ok {
		tooMany(w, wait, "too many token requests from this address")
		return
	}
	resp, err := s.token(r)
	if err != nil {
		writeOAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := int(wait.Seconds() + 0.999)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "slow_down", "error_description": msg + "; retry after " + strconv.Itoa(secs) + " s"})
}

// writeOAuthError answers an RFC 6749 5.2 error. The description is meant
// for the client; the cause (which may name internals) only goes to the log.
func writeOAuthError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauth.Error
	if !errors.As(err, &oe) {
		oe = oauth.Wrap(oauth.ServerError, err, "the token could not be issued")
	}
	if oe.Code == oauth.ServerError {
		slog.Error("token endpoint", "err", err)
	} else {
		slog.Info("token request refused", "error", oe.Code, "description", oe.Description)
	}
	status := oe.HTTPStatus()
	if oe.Code == oauth.InvalidClient {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_client"`)
	}
	writeJSON(w, status, map[string]string{"error": oe.Code, "error_description": oe.Description})
}

func (s *Server) token(r *http.Request) (*tokenResponse, error) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), "application/x-www-form-urlencoded") {
		return nil, oauth.Errorf(oauth.InvalidRequest, "the token request must be application/x-www-form-urlencoded (got %q)", ct)
	}
	r.Body = http.MaxBytesReader(nil, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		return nil, oauth.Errorf(oauth.InvalidRequest, "the token request body is not a valid form (at most %d bytes)", maxForm)
	}
	for _, p := range []string{"client_assertion", "code", "refresh_token", "code_verifier"} {
		if r.URL.Query().Has(p) {
			return nil, oauth.Errorf(oauth.InvalidRequest, "%s must be sent in the request body, never in the URL", p)
		}
	}
	f := r.PostForm
	for name, vals := range f {
		if len(vals) > 1 {
			return nil, oauth.Errorf(oauth.InvalidRequest, "parameter %s is repeated", name)
		}
	}
	ctx := r.Context()
	switch gt := f.Get("grant_type"); gt {
	case "client_credentials":
		return s.clientCredentials(ctx, f.Get)
	case "authorization_code":
		return s.authorizationCode(ctx, f.Get)
	case "refresh_token":
		return s.refresh(ctx, f.Get)
	case "":
		return nil, oauth.Errorf(oauth.InvalidRequest, "grant_type is missing")
	default:
		return nil, oauth.Errorf(oauth.UnsupportedGrantType, "grant_type %q is not supported; use client_credentials, authorization_code or refresh_token", gt)
	}
}

// authenticateClient identifies the client of a token request: by its
// signed assertion (confidential clients), or by client_id alone for
// public clients (which then prove themselves with PKCE).
func (s *Server) authenticateClient(ctx context.Context, get func(string) string) (authdb.Client, error) {
	typ, assertion, id := get("client_assertion_type"), get("client_assertion"), get("client_id")
	if typ != "" || assertion != "" {
		if typ != clientauth.AssertionType {
			return authdb.Client{}, oauth.Errorf(oauth.InvalidRequest, "client_assertion_type must be %s", clientauth.AssertionType)
		}
		cid, err := s.verifier.VerifyClientAssertion(ctx, assertion, s.tokenURL, s.db, s.db, s.o.Now())
		if err != nil {
			return authdb.Client{}, err
		}
		if id != "" && id != cid {
			return authdb.Client{}, oauth.Errorf(oauth.InvalidClient, "client_id %q differs from the assertion's issuer %q", id, cid)
		}
		c, err := s.db.GetClient(ctx, cid)
		if err != nil {
			return authdb.Client{}, oauth.Wrap(oauth.InvalidClient, err, "client %q is not registered", cid)
		}
		return c, nil
	}
	if id == "" {
		return authdb.Client{}, oauth.Errorf(oauth.InvalidRequest, "the client is not identified: send client_assertion_type and client_assertion (or client_id for a public app)")
	}
	c, err := s.db.GetClient(ctx, id)
	if errors.Is(err, authdb.ErrNotFound) {
		return authdb.Client{}, oauth.Errorf(oauth.InvalidClient, "client %q is not registered", id)
	}
	if err != nil {
		return authdb.Client{}, err
	}
	if !c.Public() {
		return authdb.Client{}, oauth.Errorf(oauth.InvalidClient, "client %q has keys and must authenticate with a client_assertion (private_key_jwt)", id)
	}
	return c, nil
}

func (s *Server) clientCredentials(ctx context.Context, get func(string) string) (*tokenResponse, error) {
	if get("client_assertion_type") == "" && get("client_assertion") == "" {
		return nil, oauth.Errorf(oauth.InvalidRequest, "client_credentials needs client_assertion_type=%s and a client_assertion", clientauth.AssertionType)
	}
	c, err := s.authenticateClient(ctx, get)
	if err != nil {
		return nil, err
	}
	requested, err := parseRequested(get("scope"))
	if err != nil {
		return nil, err
	}
	allowed, err := scope.Parse(c.Scope)
	if err != nil {
		return nil, oauth.Wrap(oauth.ServerError, err, "the client's registered scope is unreadable")
	}
	var system scope.Grants
	for _, sc := range scope.Narrow(requested, allowed).Scopes() {
		if sc.Kind == scope.Resource && sc.Context == scope.System {
			system, _ = scope.Parse(strings.TrimSpace(system.String() + " " + sc.String()))
		}
	}
	if system.Empty() {
		return nil, oauth.Errorf(oauth.InvalidScope, "none of the requested scopes (%s) is allowed for client %q, which may have: %s (client_credentials grants system/ scopes only)", get("scope"), c.ID, c.Scope)
	}
	now := s.o.Now()
	at, err := s.o.Tokens.Sign(token.Claims{Subject: c.ID, ClientID: c.ID, Scope: system.String(), IssuedAt: now, Expiry: now.Add(s.o.TokenTTL)})
	if err != nil {
		return nil, err
	}
	slog.Info("token issued", "grant", "client_credentials", "client", c.ID, "scope", system.String())
	return &tokenResponse{AccessToken: at, TokenType: "bearer", ExpiresIn: int(s.o.TokenTTL / time.Second), Scope: system.String()}, nil
}

func parseRequested(list string) (scope.Grants, error) {
	if strings.TrimSpace(list) == "" {
		return scope.Grants{}, oauth.Errorf(oauth.InvalidScope, "scope is missing; ask for scopes such as system/*.rs")
	}
	g, err := scope.Parse(list)
	if err != nil {
		return scope.Grants{}, oauth.Errorf(oauth.InvalidScope, "scope is malformed: %v", err)
	}
	return g, nil
}

func (s *Server) authorizationCode(ctx context.Context, get func(string) string) (*tokenResponse, error) {
	code := get("code")
	if code == "" {
		return nil, oauth.Errorf(oauth.InvalidRequest, "code is missing")
	}
	c, err := s.authenticateClient(ctx, get)
	if err != nil {
		return nil, err
	}
	g, err := s.db.TakeCode(ctx, secret.Hash(code))
	if errors.Is(err, authdb.ErrNotFound) {
		return nil, oauth.Errorf(oauth.InvalidGrant, "the authorization code is unknown, expired or already used")
	}
	if err != nil {
		return nil, err
	}
	if g.ClientID != c.ID {
		return nil, oauth.Errorf(oauth.InvalidGrant, "the authorization code was issued to another client")
	}
	if get("redirect_uri") != g.RedirectURI {
		return nil, oauth.Errorf(oauth.InvalidGrant, "redirect_uri does not match the one of the authorization request")
	}
	if err := pkce.Verify(get("code_verifier"), g.Challenge); err != nil {
		return nil, oauth.Errorf(oauth.InvalidGrant, "PKCE check failed: %v", err)
	}
	return s.issueUserToken(ctx, c, g, "")
}

func (s *Server) refresh(ctx context.Context, get func(string) string) (*tokenResponse, error) {
	rt := get("refresh_token")
	if rt == "" {
		return nil, oauth.Errorf(oauth.InvalidRequest, "refresh_token is missing")
	}
	c, err := s.authenticateClient(ctx, get)
	if err != nil {
		return nil, err
	}
	g, err := s.db.GetRefresh(ctx, secret.Hash(rt))
	if errors.Is(err, authdb.ErrNotFound) {
		return nil, oauth.Errorf(oauth.InvalidGrant, "the refresh token is unknown, expired or revoked")
	}
	if err != nil {
		return nil, err
	}
	if g.ClientID != c.ID {
		return nil, oauth.Errorf(oauth.InvalidGrant, "the refresh token was issued to another client")
	}
	if req := get("scope"); req != "" {
		requested, err := parseRequested(req)
		if err != nil {
			return nil, err
		}
		narrowed := scope.Narrow(requested, scope.MustParse(g.Scope))
		if narrowed.Empty() || narrowed.String() != scope.Narrow(requested, requested).String() {
			return nil, oauth.Errorf(oauth.InvalidScope, "the requested scopes are not within the original grant (%s)", g.Scope)
		}
		g.Scope = narrowed.String()
	}
	return s.issueUserToken(ctx, c, g, rt)
}

// issueUserToken issues an access token (and, for offline_access or
// online_access, a refresh token unless one is being used) for a grant a
// user approved.
func (s *Server) issueUserToken(ctx context.Context, c authdb.Client, g authdb.Grant, refresh string) (*tokenResponse, error) {
	u, err := s.db.GetUser(ctx, g.UserID)
	if err != nil {
		return nil, oauth.Wrap(oauth.InvalidGrant, err, "the user who approved this grant no longer exists")
	}
	grants, err := scope.Parse(g.Scope)
	if err != nil {
		return nil, oauth.Wrap(oauth.ServerError, err, "the granted scope is unreadable")
	}
	claims := token.Claims{Subject: "user/" + u.ID, ClientID: c.ID, Scope: g.Scope, Patient: g.Patient}
	if u.Role == authdb.RolePatient {
		claims.FHIRUser = "Patient/" + u.Patient
		claims.Patient = u.Patient
	}
	now := s.o.Now()
	claims.IssuedAt, claims.Expiry = now, now.Add(s.o.TokenTTL)
	at, err := s.o.Tokens.Sign(claims)
	if err != nil {
		return nil, err
	}
	resp := &tokenResponse{AccessToken: at, TokenType: "bearer", ExpiresIn: int(s.o.TokenTTL / time.Second), Scope: g.Scope, RefreshToken: refresh}
	if grants.HasLaunchContext("patient") || grants.NeedsPatient() {
		resp.Patient = claims.Patient
		banner := u.Role != authdb.RolePatient
		resp.NeedPatientBanner = &banner
	}
	if grants.Has(scope.OpenID) {
		if resp.IDToken, err = s.signIDToken(ctx, u, c.ID, grants.Has(scope.FHIRUser), now); err != nil {
			return nil, err
		}
	}
	if refresh == "" && (grants.Has(scope.OfflineAccess) || grants.Has(scope.OnlineAccess)) {
		rt := secret.New()
		ttl := s.o.RefreshTTL
		if !grants.Has(scope.OfflineAccess) {
			ttl = s.o.SessionTTL
		}
		g.Expires = now.Add(ttl)
		if err := s.db.SaveRefresh(ctx, secret.Hash(rt), g); err != nil {
			return nil, err
		}
		resp.RefreshToken = rt
	}
	slog.Info("token issued", "grant", "user", "client", c.ID, "user", u.ID, "scope", g.Scope)
	return resp, nil
}
