// Package authserver is phr's OAuth 2.0 / SMART on FHIR authorization
// server: SMART discovery, the token endpoint (SMART Backend Services
// client_credentials with private_key_jwt assertions, authorization_code
// with PKCE, refresh_token), the authorization endpoint with its login and
// consent pages (SMART App Launch, standalone), web sessions for the patient
// portal, and the admin JSON API for clients and users.
//
// It builds on the internal/auth packages (scope, token, clientauth, jwks,
// pkce, password, secret, oauth, bearer) and keeps its state in authdb. It
// does not import internal/server; server.build wires it with one call.
package authserver

import (
	"crypto/rsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/auth/bearer"
	"github.com/phr-project/phr/internal/auth/clientauth"
	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/clientip"
	"github.com/phr-project/phr/internal/ratelimit"
	"github.com/phr-project/phr/internal/records"
)

// Defaults for the zero Options fields.
const (
	DefaultTokenTTL   = 300 * time.Second
	DefaultRefreshTTL = 90 * 24 * time.Hour
	DefaultSessionTTL = 12 * time.Hour
	DefaultCodeTTL    = 2 * time.Minute
	// DefaultTokenRate and DefaultLoginRate are events per minute per
	// client address (bursts of twice as many).
	DefaultTokenRate = 120
	DefaultLoginRate = 10
)

// Options configure a Server.
type Options struct {
	// DB keeps clients, users, codes, refresh tokens and sessions.
	DB *authdb.DB
	// Tokens signs the access tokens.
	Tokens *token.Issuer
	// Auth authenticates bearer tokens for the admin API.
	Auth *bearer.Authenticator
	// Records reads patients (to check the patient an admin picks at
	// launch).
	Records *records.Service
	// BaseURL is the server root (http://host:port, no /fhir).
	BaseURL string
	// TokenTTL is the access token lifetime (expires_in).
	TokenTTL time.Duration
	// RefreshTTL is the lifetime of refresh tokens.
	RefreshTTL time.Duration
	// SessionTTL is the lifetime of a web session.
	SessionTTL time.Duration
	// Keys fetches client JWKS URLs; nil means a cache with a 10 s timeout.
	Keys *jwks.Cache
	// ClientIP finds the client address (rate limits, audit).
	ClientIP *clientip.Resolver
	// TokenRate and LoginRate are the per-address limits per minute
	// (DefaultTokenRate, DefaultLoginRate when zero; negative disables).
	TokenRate, LoginRate int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server serves the authorization endpoints.
type Server struct {
	o          Options
	db         *authdb.DB
	base, fhir string
	tokenURL   string
	verifier   clientauth.Verifier
	tokenLimit *ratelimit.Limiter
	loginLimit *ratelimit.Limiter
	secure     bool

	idMu   sync.Mutex
	idPriv *rsa.PrivateKey
	idKid  string
}

// New returns a Server.
func New(o Options) *Server {
	o.BaseURL = strings.TrimSuffix(o.BaseURL, "/")
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.RefreshTTL <= 0 {
		o.RefreshTTL = DefaultRefreshTTL
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Keys == nil {
		o.Keys = &jwks.Cache{Client: &http.Client{Timeout: 10 * time.Second}}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o, db: o.DB, base: o.BaseURL, fhir: o.BaseURL + "/fhir", tokenURL: o.BaseURL + "/auth/token",
		verifier: clientauth.Verifier{Keys: o.Keys}, secure: strings.HasPrefix(o.BaseURL, "https://")}
	s.tokenLimit = limiter(o.TokenRate, DefaultTokenRate)
	s.loginLimit = limiter(o.LoginRate, DefaultLoginRate)
	return s
}

func limiter(rate, def int) *ratelimit.Limiter {
	switch {
	case rate < 0:
		return nil
	case rate == 0:
		rate = def
	}
	return ratelimit.New(rate, 2*rate)
}

// TokenURL is the token endpoint, the exact aud of client assertions.
func (s *Server) TokenURL() string { return s.tokenURL }

// Register adds the endpoints to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /.well-known/smart-configuration", s.smartConfiguration)
	mux.HandleFunc("GET /fhir/.well-known/smart-configuration", s.smartConfiguration)
	mux.HandleFunc("POST /auth/token", s.tokenEndpoint)
	mux.HandleFunc("GET /auth/jwks", s.serveJWKS)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.openIDConfiguration)
	mux.HandleFunc("GET /auth/authorize", s.authorize)
	mux.HandleFunc("POST /auth/authorize", s.authorizeDecision)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.loginSubmit)
	mux.HandleFunc("POST /logout", s.logout)
	mux.HandleFunc("/admin/clients", s.adminClients)
	mux.HandleFunc("/admin/clients/{id}", s.adminClient)
	mux.HandleFunc("/admin/users", s.adminUsers)
	mux.HandleFunc("/admin/users/{id}", s.adminUser)
}

// Scopes offered in discovery.
var scopesSupported = []string{
	"system/*.rs", "system/*.cruds", "system/*.read", "system/*.write", "system/*.*",
	"patient/*.rs", "patient/*.cruds", "patient/*.read", "patient/*.write", "patient/*.*",
	"user/*.rs", "user/*.cruds", "user/*.read",
	"launch/patient", "offline_access", "online_access", "openid", "fhirUser",
}

func (s *Server) smartConfiguration(w http.ResponseWriter, r *http.Request) {
	doc := map[string]any{
		"issuer":                                s.base,
		"jwks_uri":                              s.base + "/auth/jwks",
		"token_endpoint":                        s.tokenURL,
		"authorization_endpoint":                s.base + "/auth/authorize",
		"grant_types_supported":                 []string{"client_credentials", "authorization_code", "refresh_token"},
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt", "none"},
		"token_endpoint_auth_signing_alg_values_supported": clientauth.DefaultAlgorithms,
		"scopes_supported":                 scopesSupported,
		"response_types_supported":         []string{"code"},
		"code_challenge_methods_supported": []string{"S256"},
		"capabilities": []string{
			"client-confidential-asymmetric", "client-public", "sso-openid-connect", "launch-standalone", "context-standalone-patient",
			"permission-v1", "permission-v2", "permission-patient", "permission-user", "permission-offline", "permission-online",
		},
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, doc)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		slog.Error("encode JSON response", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	w.Write(b)
}
