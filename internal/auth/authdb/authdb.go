// Package authdb keeps the authorization server's state in the phr store:
// registered OAuth clients, users, used client-assertion ids (jti),
// authorization codes, refresh tokens and web sessions. The tables are
// created by migration 0100_auth of internal/store/sqldb, for SQLite and
// PostgreSQL alike, so every replica sharing a database sees the same state
// (a replayed assertion is caught whichever replica it reaches).
//
// Secrets (codes, refresh tokens, session cookies) are stored only as
// secret.Hash values; passwords as argon2id hashes.
package authdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/auth/clientauth"
	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/auth/password"
	"github.com/phr-project/phr/internal/auth/scope"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// ErrNotFound is returned (wrapped) when a client, user, code, refresh
// token or session does not exist, has expired or was used up.
var ErrNotFound = errors.New("not found")

// ErrInvalid is returned (wrapped) for a registration that breaks a rule;
// the message says which.
var ErrInvalid = errors.New("invalid")

// DB is the authorization state in a phr store.
type DB struct {
	db *sqldb.DB
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// New returns the authorization state kept in db (already migrated).
func New(db *sqldb.DB) *DB { return &DB{db: db} }

func (d *DB) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Client is a registered OAuth client: a backend service authenticating
// with a signed assertion (JWKS or JWKSURL), an app doing SMART App Launch
// (RedirectURIs; public when it has no keys), or both.
type Client struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	JWKS         []byte    `json:"-"`
	JWKSURL      string    `json:"jwks_url,omitempty"`
	RedirectURIs []string  `json:"redirect_uris,omitempty"`
	Created      time.Time `json:"created"`
}

// Public reports whether the client has no keys (a browser or mobile app
// that proves itself with PKCE alone).
func (c Client) Public() bool { return len(c.JWKS) == 0 && c.JWKSURL == "" }

// checkClient validates a registration.
func checkClient(c *Client) error {
	c.Name = strings.TrimSpace(c.Name)
	if c.Name == "" {
		return invalidf("a client needs a name")
	}
	g, err := scope.Parse(c.Scope)
	if err != nil {
		return invalidf("scope: %v", err)
	}
	if u := g.Unknown(); len(u) > 0 {
		return invalidf("scope: unknown scopes %s", strings.Join(u, " "))
	}
	if g.Empty() {
		return invalidf("scope: at least one scope is needed, e.g. \"system/*.rs\"")
	}
	c.Scope = g.String()
	if len(c.JWKS) > 0 && c.JWKSURL != "" {
		return invalidf("give either an inline JWKS or a JWKS URL, not both")
	}
	if len(c.JWKS) > 0 {
		var raw struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal(c.JWKS, &raw); err != nil {
			return invalidf("jwks: not a JSON Web Key Set: %v", err)
		}
		for i, k := range raw.Keys {
			if _, private := k["d"]; private {
				return invalidf("jwks: key %d (kid %v) holds private key material; register only the public keys", i, k["kid"])
			}
		}
		set, err := jwks.ParseSet(c.JWKS)
		if err != nil {
			return invalidf("jwks: %v", err)
		}
		for i, k := range set.Keys {
			if k.KeyID == "" {
				return invalidf("jwks: key %d has no kid; SMART assertions name their key by kid", i)
			}
		}
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || !u.IsAbs() || (u.Scheme != "https" && u.Scheme != "http") {
			return invalidf("jwks_url %q is not an absolute http(s) URL", c.JWKSURL)
		}
		if h := u.Hostname(); u.Scheme == "http" && h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return invalidf("jwks_url %q must use https (plain http only on localhost)", c.JWKSURL)
		}
	}
	for _, r := range c.RedirectURIs {
		u, err := url.Parse(r)
		if err != nil || !u.IsAbs() || u.Fragment != "" {
			return invalidf("redirect URI %q must be an absolute URL without a fragment", r)
		}
	}
	if c.Public() && len(c.RedirectURIs) == 0 {
		return invalidf("a client needs keys (jwks or jwks_url) for backend services, or redirect URIs for app launch")
	}
	if g.Has(scope.Launch) {
		return invalidf("scope: EHR launch (\"launch\") is not offered; use launch/patient for a standalone launch")
	}
	for _, s := range g.Scopes() {
		if s.Kind == scope.Resource && s.Context == scope.System && c.Public() {
			return invalidf("scope %s: system/ scopes need a client with keys (backend services)", s)
		}
	}
	return nil
}

// AddClient registers c, giving it a new id when c.ID is empty, and returns
// it as stored.
func (d *DB) AddClient(ctx context.Context, c Client) (Client, error) {
	if err := checkClient(&c); err != nil {
		return Client{}, err
	}
	if c.ID == "" {
		c.ID = fhir.NewID()
	}
	c.Created = d.now().UTC()
	_, err := d.db.Exec(ctx, `INSERT INTO auth_client (id, name, scope, jwks, jwks_url, redirect_uris, created) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.Name, c.Scope, string(c.JWKS), c.JWKSURL, strings.Join(c.RedirectURIs, " "), sqldb.Micros(c.Created))
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "unique") || strings.Contains(err.Error(), "duplicate") {
			return Client{}, invalidf("a client with id %q already exists", c.ID)
		}
		return Client{}, fmt.Errorf("add client: %w", err)
	}
	return c, nil
}

const clientCols = `id, name, scope, jwks, jwks_url, redirect_uris, created`

func scanClient(sc interface{ Scan(...any) error }) (Client, error) {
	var c Client
	var keys, redirects string
	var created int64
	if err := sc.Scan(&c.ID, &c.Name, &c.Scope, &keys, &c.JWKSURL, &redirects, &created); err != nil {
		return Client{}, err
	}
	if keys != "" {
		c.JWKS = []byte(keys)
	}
	c.RedirectURIs = strings.Fields(redirects)
	c.Created = sqldb.FromMicros(created)
	return c, nil
}

// GetClient returns the client with id, or an error wrapping ErrNotFound.
func (d *DB) GetClient(ctx context.Context, id string) (Client, error) {
	c, err := scanClient(d.db.QueryRow(ctx, `SELECT `+clientCols+` FROM auth_client WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Client{}, fmt.Errorf("client %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Client{}, fmt.Errorf("read client %s: %w", id, err)
	}
	return c, nil
}

// Clients lists the registered clients by name.
func (d *DB) Clients(ctx context.Context) ([]Client, error) {
	rows, err := d.db.Query(ctx, `SELECT `+clientCols+` FROM auth_client ORDER BY name, id`)
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	defer rows.Close()
	var out []Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, fmt.Errorf("list clients: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// RemoveClient deletes a client and revokes its refresh tokens.
func (d *DB) RemoveClient(ctx context.Context, id string) error {
	res, err := d.db.Exec(ctx, `DELETE FROM auth_client WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("remove client %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("client %q: %w", id, ErrNotFound)
	}
	if _, err := d.db.Exec(ctx, `UPDATE auth_refresh SET revoked = 1 WHERE client_id = ?`, id); err != nil {
		return fmt.Errorf("revoke refresh tokens of client %s: %w", id, err)
	}
	return nil
}

// Client implements clientauth.ClientKeys.
func (d *DB) Client(ctx context.Context, id string) (clientauth.Client, error) {
	c, err := d.GetClient(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return clientauth.Client{}, fmt.Errorf("%w: %s", clientauth.ErrUnknownClient, id)
	}
	if err != nil {
		return clientauth.Client{}, err
	}
	return clientauth.Client{ID: c.ID, JWKS: c.JWKS, JWKSURL: c.JWKSURL}, nil
}

// UseJTI implements clientauth.JTIChecker in the database: of two requests
// with one jti, on any replica, only one inserts (or revives an expired)
// row. Expired rows are pruned now and then.
func (d *DB) UseJTI(ctx context.Context, clientID, jti string, expires time.Time) error {
	now := sqldb.Micros(d.now())
	res, err := d.db.Exec(ctx, `INSERT INTO auth_jti (client_id, jti, expires) VALUES (?, ?, ?)
ON CONFLICT (client_id, jti) DO UPDATE SET expires = excluded.expires WHERE auth_jti.expires < ?`,
		clientID, jti, sqldb.Micros(expires), now)
	if err != nil {
		return fmt.Errorf("record jti: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("record jti: %w", err)
	} else if n == 0 {
		return fmt.Errorf("client %s jti %s: %w", clientID, jti, clientauth.ErrReplayed)
	}
	if now%64 == 0 { // prune about once in 64 calls
		d.db.Exec(ctx, `DELETE FROM auth_jti WHERE expires < ?`, now)
	}
	return nil
}

// Roles of users.
const (
	RolePatient = "patient"
	RoleAdmin   = "admin"
)

// User is a person who signs in: a patient (confined to the record of
// Patient) or an administrator (everything).
type User struct {
	ID      string    `json:"id"`
	Email   string    `json:"email"`
	Role    string    `json:"role"`
	Patient string    `json:"patient,omitempty"`
	Created time.Time `json:"created"`
	// hash is the argon2id password hash.
	hash string
}

// MinPassword is the shortest password accepted.
const MinPassword = 10

// AddUser creates a user with a password (hashed with argon2id).
func (d *DB) AddUser(ctx context.Context, u User, pw string) (User, error) {
	u.Email = strings.ToLower(strings.TrimSpace(u.Email))
	if at := strings.IndexByte(u.Email, '@'); at < 1 || at == len(u.Email)-1 || strings.ContainsAny(u.Email, " \t\r\n") {
		return User{}, invalidf("email %q is not an address like name@example.org", u.Email)
	}
	switch u.Role {
	case RolePatient:
		if u.Patient == "" || !fhir.ValidID(u.Patient) {
			return User{}, invalidf("a patient user needs the id of their Patient resource (got %q)", u.Patient)
		}
	case RoleAdmin:
		if u.Patient != "" {
			return User{}, invalidf("an admin user is not tied to a patient")
		}
	default:
		return User{}, invalidf("role %q must be %q or %q", u.Role, RolePatient, RoleAdmin)
	}
	if len([]rune(pw)) < MinPassword {
		return User{}, invalidf("the password must have at least %d characters", MinPassword)
	}
	h, err := password.Hash(ctx, pw)
	if err != nil {
		return User{}, fmt.Errorf("hash password: %w", err)
	}
	if u.ID == "" {
		u.ID = fhir.NewID()
	}
	u.Created = d.now().UTC()
	_, err = d.db.Exec(ctx, `INSERT INTO auth_user (id, email, role, patient, password, created) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Email, u.Role, u.Patient, h, sqldb.Micros(u.Created))
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "unique") || strings.Contains(err.Error(), "duplicate") {
			return User{}, invalidf("a user with email %s already exists", u.Email)
		}
		return User{}, fmt.Errorf("add user: %w", err)
	}
	u.hash = h
	return u, nil
}

const userCols = `id, email, role, patient, password, created`

func scanUser(sc interface{ Scan(...any) error }) (User, error) {
	var u User
	var created int64
	if err := sc.Scan(&u.ID, &u.Email, &u.Role, &u.Patient, &u.hash, &created); err != nil {
		return User{}, err
	}
	u.Created = sqldb.FromMicros(created)
	return u, nil
}

func (d *DB) user(ctx context.Context, where string, arg any) (User, error) {
	u, err := scanUser(d.db.QueryRow(ctx, `SELECT `+userCols+` FROM auth_user WHERE `+where+` = ?`, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("user: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("read user: %w", err)
	}
	return u, nil
}

// GetUser returns the user with id.
func (d *DB) GetUser(ctx context.Context, id string) (User, error) { return d.user(ctx, "id", id) }

// UserByEmail returns the user with the (case-insensitive) email.
func (d *DB) UserByEmail(ctx context.Context, email string) (User, error) {
	return d.user(ctx, "email", strings.ToLower(strings.TrimSpace(email)))
}

// dummyHash is verified against when the email is unknown, so that the
// response time does not reveal which addresses have accounts.
var dummyHash string

// CheckPassword returns the user with email if pw is their password; an
// unknown email and a wrong password give the same error (wrapping
// ErrNotFound) after the same work.
func (d *DB) CheckPassword(ctx context.Context, email, pw string) (User, error) {
	u, err := d.UserByEmail(ctx, email)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return User{}, err
	}
	hash := u.hash
	if hash == "" {
		if dummyHash == "" {
			dummyHash, _ = password.Hash(ctx, "not a password of anyone")
		}
		hash = dummyHash
	}
	ok, verr := password.Verify(ctx, pw, hash)
	if verr != nil && err == nil {
		return User{}, fmt.Errorf("verify password: %w", verr)
	}
	if err != nil || !ok {
		return User{}, fmt.Errorf("wrong email or password: %w", ErrNotFound)
	}
	return u, nil
}

// Users lists users by email.
func (d *DB) Users(ctx context.Context) ([]User, error) {
	rows, err := d.db.Query(ctx, `SELECT `+userCols+` FROM auth_user ORDER BY email`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// RemoveUser deletes a user (by id or email), ends their sessions and
// revokes their refresh tokens.
func (d *DB) RemoveUser(ctx context.Context, idOrEmail string) error {
	u, err := d.GetUser(ctx, idOrEmail)
	if errors.Is(err, ErrNotFound) {
		u, err = d.UserByEmail(ctx, idOrEmail)
	}
	if err != nil {
		return fmt.Errorf("remove user %s: %w", idOrEmail, err)
	}
	for _, q := range []string{
		`DELETE FROM auth_session WHERE user_id = ?`,
		`UPDATE auth_refresh SET revoked = 1 WHERE user_id = ?`,
		`DELETE FROM auth_user WHERE id = ?`,
	} {
		if _, err := d.db.Exec(ctx, q, u.ID); err != nil {
			return fmt.Errorf("remove user %s: %w", u.Email, err)
		}
	}
	return nil
}

// Grant is what an authorization code or refresh token stands for.
type Grant struct {
	ClientID    string
	UserID      string
	RedirectURI string
	Scope       string
	Patient     string
	// Challenge is the PKCE S256 code_challenge (codes only).
	Challenge string
	Expires   time.Time
}

// SaveCode stores an authorization code by the hash of its secret.
func (d *DB) SaveCode(ctx context.Context, hash string, g Grant) error {
	_, err := d.db.Exec(ctx, `INSERT INTO auth_code (hash, client_id, user_id, redirect_uri, scope, patient, challenge, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		hash, g.ClientID, g.UserID, g.RedirectURI, g.Scope, g.Patient, g.Challenge, sqldb.Micros(g.Expires))
	if err != nil {
		return fmt.Errorf("save authorization code: %w", err)
	}
	d.db.Exec(ctx, `DELETE FROM auth_code WHERE expires < ?`, sqldb.Micros(d.now().Add(-time.Hour)))
	return nil
}

// TakeCode redeems an authorization code: it succeeds once per code, before
// it expires (an error wrapping ErrNotFound otherwise).
func (d *DB) TakeCode(ctx context.Context, hash string) (Grant, error) {
	res, err := d.db.Exec(ctx, `UPDATE auth_code SET used = 1 WHERE hash = ? AND used = 0 AND expires > ?`, hash, sqldb.Micros(d.now()))
	if err != nil {
		return Grant{}, fmt.Errorf("redeem authorization code: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return Grant{}, fmt.Errorf("authorization code is unknown, expired or already used: %w", ErrNotFound)
	}
	var g Grant
	var exp int64
	err = d.db.QueryRow(ctx, `SELECT client_id, user_id, redirect_uri, scope, patient, challenge, expires FROM auth_code WHERE hash = ?`, hash).
		Scan(&g.ClientID, &g.UserID, &g.RedirectURI, &g.Scope, &g.Patient, &g.Challenge, &exp)
	if err != nil {
		return Grant{}, fmt.Errorf("read authorization code: %w", err)
	}
	g.Expires = sqldb.FromMicros(exp)
	return g, nil
}

// SaveRefresh stores a refresh token by the hash of its secret.
func (d *DB) SaveRefresh(ctx context.Context, hash string, g Grant) error {
	_, err := d.db.Exec(ctx, `INSERT INTO auth_refresh (hash, client_id, user_id, scope, patient, expires) VALUES (?, ?, ?, ?, ?, ?)`,
		hash, g.ClientID, g.UserID, g.Scope, g.Patient, sqldb.Micros(g.Expires))
	if err != nil {
		return fmt.Errorf("save refresh token: %w", err)
	}
	return nil
}

// GetRefresh returns the grant of a live refresh token.
func (d *DB) GetRefresh(ctx context.Context, hash string) (Grant, error) {
	var g Grant
	var exp int64
	err := d.db.QueryRow(ctx, `SELECT client_id, user_id, scope, patient, expires FROM auth_refresh WHERE hash = ? AND revoked = 0 AND expires > ?`, hash, sqldb.Micros(d.now())).
		Scan(&g.ClientID, &g.UserID, &g.Scope, &g.Patient, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Grant{}, fmt.Errorf("refresh token is unknown, expired or revoked: %w", ErrNotFound)
	}
	if err != nil {
		return Grant{}, fmt.Errorf("read refresh token: %w", err)
	}
	g.Expires = sqldb.FromMicros(exp)
	return g, nil
}

// RevokeRefresh revokes one refresh token.
func (d *DB) RevokeRefresh(ctx context.Context, hash string) error {
	_, err := d.db.Exec(ctx, `UPDATE auth_refresh SET revoked = 1 WHERE hash = ?`, hash)
	if err != nil {
		return fmt.Errorf("revoke refresh token: %w", err)
	}
	return nil
}

// SessionRow is a stored web session.
type SessionRow struct {
	Hash    string
	User    User
	CSRF    string
	Expires time.Time
}

// SaveSession stores a session by the hash of its cookie secret.
func (d *DB) SaveSession(ctx context.Context, hash, userID, csrf string, expires time.Time) error {
	_, err := d.db.Exec(ctx, `INSERT INTO auth_session (hash, user_id, csrf, expires) VALUES (?, ?, ?, ?)`, hash, userID, csrf, sqldb.Micros(expires))
	if err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	d.db.Exec(ctx, `DELETE FROM auth_session WHERE expires < ?`, sqldb.Micros(d.now()))
	return nil
}

// GetSession returns a live session and its user.
func (d *DB) GetSession(ctx context.Context, hash string) (SessionRow, error) {
	var s SessionRow
	var exp, created int64
	u := &s.User
	err := d.db.QueryRow(ctx, `SELECT s.csrf, s.expires, u.id, u.email, u.role, u.patient, u.password, u.created
FROM auth_session s JOIN auth_user u ON u.id = s.user_id WHERE s.hash = ? AND s.expires > ?`, hash, sqldb.Micros(d.now())).
		Scan(&s.CSRF, &exp, &u.ID, &u.Email, &u.Role, &u.Patient, &u.hash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return SessionRow{}, fmt.Errorf("session: %w", ErrNotFound)
	}
	if err != nil {
		return SessionRow{}, fmt.Errorf("read session: %w", err)
	}
	s.Hash = hash
	s.Expires = sqldb.FromMicros(exp)
	u.Created = sqldb.FromMicros(created)
	return s, nil
}

// DeleteSession ends a session.
func (d *DB) DeleteSession(ctx context.Context, hash string) error {
	if _, err := d.db.Exec(ctx, `DELETE FROM auth_session WHERE hash = ?`, hash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// InitSetting stores value under key unless a value is already there, and
// returns the stored one (so replicas starting together agree).
func (d *DB) InitSetting(ctx context.Context, key string, value []byte) ([]byte, error) {
	return d.db.InitKV(ctx, key, value)
}
