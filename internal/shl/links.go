package shl

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/bearer"
	"github.com/phr-project/phr/internal/auth/password"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/jwe"
	"github.com/phr-project/phr/internal/qrcode"
	"github.com/phr-project/phr/internal/shlink"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Link is a link as its owner sees it. The key (and so the link itself)
// is returned only by Create: the server does not keep it in the clear.
type Link struct {
	ID      string `json:"id"`
	Patient string `json:"patient"`
	Label   string `json:"label,omitempty"`
	Flag    string `json:"flag,omitempty"`
	// Passcode tells whether a passcode protects the link (the P flag).
	Passcode bool `json:"passcode"`
	// RemainingAttempts is the number of wrong passcodes left before the
	// link is disabled (P links only).
	RemainingAttempts *int `json:"remainingAttempts,omitempty"`
	// Expires is the instant the link stops working (none when empty).
	Expires string `json:"expires,omitempty"`
	// Status is active, expired, revoked or exhausted (no attempts left).
	Status  string     `json:"status"`
	Created string     `json:"created"`
	Updated string     `json:"updated"`
	Files   []FileInfo `json:"files"`

	// Set in the response to Create only.
	URL        string `json:"url,omitempty"`
	Link       string `json:"link,omitempty"`
	ViewerLink string `json:"viewerLink,omitempty"`
	QR         *QR    `json:"qr,omitempty"`
}

// QR holds the link's QR code (error correction M, byte mode).
type QR struct {
	// PNG is a data: URL of the PNG image.
	PNG string `json:"png"`
	// SVG is the SVG document.
	SVG string `json:"svg"`
}

// FileInfo describes one file of a link.
type FileInfo struct {
	N           int       `json:"n"`
	ContentType string    `json:"contentType"`
	Content     Selection `json:"content"`
	LastUpdated string    `json:"lastUpdated"`
	Status      string    `json:"status"`
	// Size is the length of the file's JWE in characters.
	Size int `json:"size"`
}

// CreateRequest is the body of POST /shl.
type CreateRequest struct {
	Label    string `json:"label"`
	Passcode string `json:"passcode"`
	// Expires is an instant (2026-12-31T23:59:59Z), a date, or a
	// duration from now such as "7d", "12h" or "30m"; empty: never.
	Expires string `json:"expires"`
	// Flag holds the letters L, P and U in any order.
	Flag string `json:"flag"`
	// Patient is whose record is shared; patient tokens may omit it (it
	// must be their own patient).
	Patient string `json:"patient"`
	// Content lists the files; default one file with the whole record.
	Content []Selection `json:"content"`
	// QRViewer makes the QR code carry the viewer URL with the link after
	// "#" (phone cameras open it in a browser) instead of the bare link.
	QRViewer bool `json:"qrViewer"`
}

// UpdateRequest is the body of PATCH/PUT /shl/links/{id}. Absent fields
// keep their value; every update resets the passcode attempts.
type UpdateRequest struct {
	Passcode *string `json:"passcode"`
	// Expires as in CreateRequest; "" removes the expiry.
	Expires *string `json:"expires"`
	Label   *string `json:"label"`
}

// link is a stored link.
type link struct {
	ID, Patient, Owner, OwnerScope, Label, Flags, PasscodeHash string
	AttemptsLeft                                               int
	Expires, Created, Updated                                  int64
	Revoked                                                    bool
	WrappedKey                                                 []byte
	Fingerprint                                                string
}

func (l *link) has(f byte) bool { return strings.IndexByte(l.Flags, f) >= 0 }

// state is the link's status at time now (micros).
func (l *link) state(now int64) string {
	switch {
	case l.Revoked:
		return "revoked"
	case l.Expires != 0 && now >= l.Expires:
		return "expired"
	case l.has('P') && l.AttemptsLeft <= 0:
		return "exhausted"
	}
	return "active"
}

// file is a stored file of a link.
type file struct {
	N           int
	ContentType string
	Selection   Selection
	JWE         string
	LastUpdated int64
}

// status is the file's manifest status.
func (f *file) status(l *link) string {
	if l.has('L') && f.Selection.Kind != KindFile {
		return "can-change"
	}
	return "finalized"
}

const linkCols = `id, patient, owner, owner_scope, label, flags, passcode_hash, attempts_left, expires, revoked, created, updated, wrapped_key, fingerprint`

type scanner interface{ Scan(...any) error }

func scanLink(sc scanner) (*link, error) {
	var l link
	var revoked int64
	if err := sc.Scan(&l.ID, &l.Patient, &l.Owner, &l.OwnerScope, &l.Label, &l.Flags, &l.PasscodeHash, &l.AttemptsLeft,
		&l.Expires, &revoked, &l.Created, &l.Updated, &l.WrappedKey, &l.Fingerprint); err != nil {
		return nil, err
	}
	l.Revoked = revoked != 0
	return &l, nil
}

type querier interface {
	QueryRow(ctx context.Context, q string, args ...any) *sql.Row
	Query(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func (s *Service) getLink(ctx context.Context, q querier, id string) (*link, error) {
	l, err := scanLink(q.QueryRow(ctx, `SELECT `+linkCols+` FROM shl_link WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fhir.NotFound("SMART Health Link %q is not known", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read link %s: %w", id, err)
	}
	return l, nil
}

func (s *Service) linkByManifest(ctx context.Context, q querier, mid string) (*link, error) {
	l, err := scanLink(q.QueryRow(ctx, `SELECT `+linkCols+` FROM shl_link WHERE manifest_hash = ?`, hashID(mid)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notActive()
	}
	if err != nil {
		return nil, fmt.Errorf("read link: %w", err)
	}
	return l, nil
}

func (s *Service) files(ctx context.Context, q querier, linkID string) ([]*file, error) {
	rows, err := q.Query(ctx, `SELECT n, content_type, selection, jwe, last_updated FROM shl_file WHERE link_id = ? ORDER BY n`, linkID)
	if err != nil {
		return nil, fmt.Errorf("read files of link %s: %w", linkID, err)
	}
	defer rows.Close()
	var out []*file
	for rows.Next() {
		var f file
		var sel string
		if err := rows.Scan(&f.N, &f.ContentType, &sel, &f.JWE, &f.LastUpdated); err != nil {
			return nil, fmt.Errorf("read files of link %s: %w", linkID, err)
		}
		if err := json.Unmarshal([]byte(sel), &f.Selection); err != nil {
			return nil, fmt.Errorf("file %d of link %s: stored selection: %w", f.N, linkID, err)
		}
		out = append(out, &f)
	}
	return out, rows.Err()
}

// notActive is the one answer recipients get for unknown, expired,
// revoked and exhausted links alike.
func notActive() error {
	return fhir.NotFound("no active SMART Health Link at this address (unknown, expired, revoked or disabled)")
}

func instant(us int64) string {
	if us == 0 {
		return ""
	}
	return fhir.FormatInstant(sqldb.FromMicros(us))
}

// view renders a stored link for its owner.
func (s *Service) view(l *link, files []*file) *Link {
	v := &Link{ID: l.ID, Patient: l.Patient, Label: l.Label, Flag: l.Flags, Passcode: l.has('P'),
		Expires: instant(l.Expires), Status: l.state(sqldb.Micros(s.now())), Created: instant(l.Created), Updated: instant(l.Updated),
		Files: []FileInfo{}}
	if l.has('P') {
		n := max(l.AttemptsLeft, 0)
		v.RemainingAttempts = &n
	}
	for _, f := range files {
		v.Files = append(v.Files, FileInfo{N: f.N, ContentType: f.ContentType, Content: f.Selection, LastUpdated: instant(f.LastUpdated),
			Status: f.status(l), Size: len(f.JWE)})
	}
	return v
}

// canManage checks that p may manage links over patient's record:
// patient-confined callers their own only, others when they may read
// Patient resources (user or system scopes).
func canManage(p access.Principal, patient string) error {
	if pid := p.Patient(); pid != "" {
		if pid != patient {
			return fhir.NotFound("SMART Health Link not known")
		}
		return nil
	}
	if !p.Allows(access.Read, "Patient") {
		return fhir.Forbidden("managing SMART Health Links needs read access to Patient resources")
	}
	return nil
}

func principalOf(ctx context.Context) (access.Principal, error) {
	p := access.From(ctx)
	if p == nil {
		return nil, fhir.Errorf(http.StatusUnauthorized, "login", "authentication required")
	}
	return p, nil
}

var durRE = regexp.MustCompile(`^([0-9]{1,6})([smhdw])$`)

// ParseExpiry reads an expiry: a duration from now ("7d", "12h", "30m",
// "2w", "90s"), an instant or a date (end of that day, UTC).
func ParseExpiry(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if m := durRE.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		return now.Add(time.Duration(n) * unit), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.Add(24*time.Hour - time.Second), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration like 7d, 12h or 30m, nor an instant like 2026-12-31T23:59:59Z, nor a date", s)
}

// normFlags checks and sorts the flag letters.
func normFlags(f string) (string, error) {
	var out []byte
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != 'L' && c != 'P' && c != 'U' {
			return "", fmt.Errorf("flag %q: only L, P and U are defined", string(c))
		}
		if strings.IndexByte(string(out), c) < 0 {
			out = append(out, c)
		}
	}
	var b strings.Builder
	for _, c := range "LPU" {
		if strings.ContainsRune(string(out), c) {
			b.WriteRune(c)
		}
	}
	return b.String(), nil
}

// PasscodeParams is the default argon2id cost of passcode hashes: the
// OWASP minimum (19 MiB, 2 passes, 1 lane). The lifetime attempt limit is
// what stops online guessing; the hash only slows guessing from a stolen
// database, and recipients must not wait on a login-grade hash.
var PasscodeParams = password.Params{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

func (s *Service) hashPasscode(ctx context.Context, pc string) (string, error) {
	p := PasscodeParams
	if s.o.Passcode != nil {
		p = *s.o.Passcode
	}
	return password.HashWith(ctx, pc, p)
}

// Create makes a link over the caller's selection of a patient's record.
// The caller's principal (in ctx) reads the record, so a link never holds
// more than its creator may see.
func (s *Service) Create(ctx context.Context, req *CreateRequest) (*Link, error) {
	p, err := principalOf(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	flags, err := normFlags(req.Flag)
	if err != nil {
		return nil, fhir.BadRequest("%v", err).AtPath("flag")
	}
	if req.Passcode != "" && !strings.Contains(flags, "P") {
		flags, _ = normFlags(flags + "P")
	}
	if strings.Contains(flags, "P") && req.Passcode == "" {
		return nil, fhir.BadRequest("flag P needs a passcode").AtPath("passcode")
	}
	if strings.Contains(flags, "U") && strings.Contains(flags, "P") {
		return nil, fhir.BadRequest("flag U (direct file download) cannot be combined with a passcode (P)").AtPath("flag")
	}
	if n := utf8.RuneCountInString(req.Label); n > shlink.MaxLabelLen {
		return nil, fhir.BadRequest("label has %d characters; at most %d are allowed", n, shlink.MaxLabelLen).AtPath("label")
	}
	var expires int64
	if req.Expires != "" {
		t, err := ParseExpiry(req.Expires, now)
		if err != nil {
			return nil, fhir.BadRequest("%v", err).AtPath("expires")
		}
		if !t.After(now) {
			return nil, fhir.BadRequest("expires %s is not in the future", fhir.FormatInstant(t)).AtPath("expires")
		}
		expires = sqldb.Micros(t)
	}
	patient := req.Patient
	if pid := p.Patient(); pid != "" {
		if patient != "" && patient != pid {
			return nil, fhir.Forbidden("this access token is confined to Patient/%s and cannot share the record of Patient/%s", pid, patient).AtPath("patient")
		}
		patient = pid
	}
	if patient == "" {
		return nil, fhir.BadRequest("patient is required: whose record does the link share?").AtPath("patient")
	}
	if err := canManage(p, patient); err != nil {
		return nil, err
	}
	if _, err := s.records.Read(ctx, "Patient", patient); err != nil {
		return nil, err
	}
	content := req.Content
	if len(content) == 0 {
		content = []Selection{{Kind: KindRecord}}
	}
	if strings.Contains(flags, "U") && len(content) != 1 {
		return nil, fhir.BadRequest("flag U serves exactly one file; %d were asked for", len(content)).AtPath("content")
	}

	keyText := shlink.NewKey()
	key, _ := base64.RawURLEncoding.DecodeString(keyText)
	mid := shlink.NewManifestID()
	l := &link{ID: fhir.NewID(), Patient: patient, Owner: p.Subject(), Label: req.Label, Flags: flags,
		AttemptsLeft: s.o.MaxAttempts, Expires: expires, Created: sqldb.Micros(now), Updated: sqldb.Micros(now)}
	if bp, ok := p.(*bearer.Principal); ok {
		l.OwnerScope = bp.Claims.Scope
	}
	if req.Passcode != "" {
		if l.PasscodeHash, err = s.hashPasscode(ctx, req.Passcode); err != nil {
			return nil, fhir.BadRequest("passcode: %v", err).AtPath("passcode")
		}
	}
	if l.Fingerprint, err = s.fingerprint(ctx, patient); err != nil {
		return nil, err
	}
	var files []*file
	for i, sel := range content {
		f, err := s.buildFile(ctx, patient, sel, key, now)
		if err != nil {
			if fe := fhir.AsError(err); fe.Status < 500 {
				return nil, fe.AtPath(fmt.Sprintf("content[%d]", i))
			}
			return nil, err
		}
		f.N = i
		files = append(files, f)
	}
	if l.has('L') {
		if l.WrappedKey, err = s.wrap(l.ID, key); err != nil {
			return nil, err
		}
	}
	err = s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		var wrapped any
		if l.WrappedKey != nil {
			wrapped = l.WrappedKey
		}
		if _, err := tx.Exec(ctx, `INSERT INTO shl_link (`+linkCols+`, manifest_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)`,
			l.ID, l.Patient, l.Owner, l.OwnerScope, l.Label, l.Flags, l.PasscodeHash, l.AttemptsLeft, l.Expires, l.Created, l.Updated,
			wrapped, l.Fingerprint, hashID(mid)); err != nil {
			return fmt.Errorf("store link: %w", err)
		}
		for _, f := range files {
			if err := insertFile(ctx, tx, l.ID, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	v := s.view(l, files)
	payload := shlink.Payload{URL: s.manifestURL(mid), Key: keyText, Flag: flags, Label: req.Label}
	if expires != 0 {
		payload.Exp = expires / 1e6
	}
	if v.Link, err = shlink.Encode(payload); err != nil {
		return nil, fmt.Errorf("encode link: %w", err)
	}
	v.URL = payload.URL
	v.ViewerLink = s.ViewerURL() + "#" + v.Link
	qrText := v.Link
	if req.QRViewer {
		qrText = v.ViewerLink
	}
	png, err := qrcode.PNG(qrText, 4)
	if err != nil {
		return nil, fmt.Errorf("QR code: %w", err)
	}
	svg, err := qrcode.SVG(qrText, 4)
	if err != nil {
		return nil, fmt.Errorf("QR code: %w", err)
	}
	v.QR = &QR{PNG: "data:image/png;base64," + base64.StdEncoding.EncodeToString(png), SVG: string(svg)}
	return v, nil
}

func insertFile(ctx context.Context, tx *sqldb.Tx, linkID string, f *file) error {
	sel := f.Selection.stored()
	sj, err := json.Marshal(sel)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO shl_file (link_id, n, content_type, selection, jwe, last_updated) VALUES (?, ?, ?, ?, ?, ?)`,
		linkID, f.N, f.ContentType, string(sj), f.JWE, f.LastUpdated); err != nil {
		return fmt.Errorf("store file %d of link %s: %w", f.N, linkID, err)
	}
	return nil
}

// buildFile reads and encrypts one selection.
func (s *Service) buildFile(ctx context.Context, patient string, sel Selection, key []byte, now time.Time) (*file, error) {
	if sel.Kind == KindFile && sel.JWE != "" {
		h, err := checkJWE(sel.JWE)
		if err != nil {
			return nil, err
		}
		ct := sel.ContentType
		if ct == "" {
			ct = h.Cty
		}
		if ct == "" {
			ct = "application/fhir+json"
		}
		return &file{ContentType: ct, Selection: sel, JWE: sel.JWE, LastUpdated: sqldb.Micros(now)}, nil
	}
	ct, data, err := s.build(ctx, patient, sel, now)
	if err != nil {
		return nil, err
	}
	enc, err := jwe.Encrypt(key, data, jwe.Options{ContentType: ct, Compress: true})
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return &file{ContentType: ct, Selection: sel, JWE: enc, LastUpdated: sqldb.Micros(now)}, nil
}

// checkJWE checks the shape of a JWE encrypted by the link's holder (the
// server cannot decrypt it).
func checkJWE(s string) (jwe.Header, error) {
	var h jwe.Header
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 5 || parts[1] != "" {
		return h, fhir.BadRequest("jwe must be a compact JWE with 5 dot-separated segments and an empty encrypted key (alg dir)").AtPath("jwe")
	}
	hj, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hj, &h) != nil {
		return h, fhir.BadRequest("jwe: the protected header is not base64url JSON").AtPath("jwe")
	}
	if h.Alg != "dir" || h.Enc != "A256GCM" {
		return h, fhir.BadRequest("jwe: header has alg %q enc %q; SMART Health Links use dir and A256GCM", h.Alg, h.Enc).AtPath("jwe")
	}
	return h, nil
}

// managedLink reads link id for its manager: the caller's principal must
// be allowed to manage links over the link's patient.
func (s *Service) managedLink(ctx context.Context, id string) (*link, error) {
	p, err := principalOf(ctx)
	if err != nil {
		return nil, err
	}
	l, err := s.getLink(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	if err := canManage(p, l.Patient); err != nil {
		return nil, err
	}
	return l, nil
}

// Get returns one link.
func (s *Service) Get(ctx context.Context, id string) (*Link, error) {
	l, err := s.managedLink(ctx, id)
	if err != nil {
		return nil, err
	}
	files, err := s.files(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	return s.view(l, files), nil
}

// List returns the links the caller may manage, newest first; patient
// narrows the list for unconfined callers.
func (s *Service) List(ctx context.Context, patient string) ([]*Link, error) {
	p, err := principalOf(ctx)
	if err != nil {
		return nil, err
	}
	if pid := p.Patient(); pid != "" {
		if patient != "" && patient != pid {
			return nil, fhir.Forbidden("this access token is confined to Patient/%s", pid)
		}
		patient = pid
	} else if err := canManage(p, ""); err != nil {
		return nil, err
	}
	q := `SELECT ` + linkCols + ` FROM shl_link`
	var args []any
	if patient != "" {
		q += ` WHERE patient = ?`
		args = append(args, patient)
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY created DESC, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var links []*link
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list links: %w", err)
		}
		links = append(links, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := []*Link{}
	for _, l := range links {
		files, err := s.files(ctx, s.db, l.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, s.view(l, files))
	}
	return out, nil
}

// Update changes a link's passcode, expiry or label and resets its
// passcode attempts.
func (s *Service) Update(ctx context.Context, id string, req *UpdateRequest) (*Link, error) {
	l, err := s.managedLink(ctx, id)
	if err != nil {
		return nil, err
	}
	if l.Revoked {
		return nil, fhir.Conflict("link %s is revoked; create a new one", id)
	}
	now := s.now()
	if req.Passcode != nil {
		switch {
		case *req.Passcode == "" && l.has('P'):
			return nil, fhir.BadRequest("the link carries the P flag, so recipients will ask for a passcode; it cannot be removed (revoke the link and create one without)").AtPath("passcode")
		case *req.Passcode != "" && !l.has('P'):
			return nil, fhir.BadRequest("the link was made without the P flag, so recipients will not ask for a passcode; create a new link with one").AtPath("passcode")
		case *req.Passcode != "":
			if l.PasscodeHash, err = s.hashPasscode(ctx, *req.Passcode); err != nil {
				return nil, fhir.BadRequest("passcode: %v", err).AtPath("passcode")
			}
		}
	}
	if req.Expires != nil {
		if *req.Expires == "" {
			l.Expires = 0
		} else {
			t, err := ParseExpiry(*req.Expires, now)
			if err != nil {
				return nil, fhir.BadRequest("%v", err).AtPath("expires")
			}
			if !t.After(now) {
				return nil, fhir.BadRequest("expires %s is not in the future (revoke the link to stop it now)", fhir.FormatInstant(t)).AtPath("expires")
			}
			l.Expires = sqldb.Micros(t)
		}
	}
	if req.Label != nil {
		if n := utf8.RuneCountInString(*req.Label); n > shlink.MaxLabelLen {
			return nil, fhir.BadRequest("label has %d characters; at most %d are allowed", n, shlink.MaxLabelLen).AtPath("label")
		}
		l.Label = *req.Label
	}
	l.AttemptsLeft = s.o.MaxAttempts
	l.Updated = sqldb.Micros(now)
	err = s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE shl_link SET passcode_hash = ?, expires = ?, label = ?, attempts_left = ?, updated = ? WHERE id = ? AND revoked = 0`,
			l.PasscodeHash, l.Expires, l.Label, l.AttemptsLeft, l.Updated, id)
		if err != nil {
			return fmt.Errorf("update link %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fhir.Conflict("link %s was revoked meanwhile", id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}

// Revoke stops a link for good: its manifest and locations answer 404
// and its encrypted files and kept key are erased.
func (s *Service) Revoke(ctx context.Context, id string) error {
	if _, err := s.managedLink(ctx, id); err != nil {
		return err
	}
	now := sqldb.Micros(s.now())
	return s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE shl_link SET revoked = 1, wrapped_key = NULL, updated = ? WHERE id = ?`, now, id); err != nil {
			return fmt.Errorf("revoke link %s: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE shl_file SET jwe = '' WHERE link_id = ?`, id); err != nil {
			return fmt.Errorf("revoke link %s: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM shl_location WHERE link_id = ?`, id); err != nil {
			return fmt.Errorf("revoke link %s: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM shl_poll WHERE link_id = ?`, id); err != nil {
			return fmt.Errorf("revoke link %s: %w", id, err)
		}
		return nil
	})
}

// AddFile adds a file to a link: a selection the server encrypts (L links,
// whose key it keeps) or a JWE the holder encrypted with the link's key.
func (s *Service) AddFile(ctx context.Context, id string, sel Selection) (*Link, error) {
	l, err := s.managedLink(ctx, id)
	if err != nil {
		return nil, err
	}
	if st := l.state(sqldb.Micros(s.now())); st != "active" {
		return nil, fhir.Conflict("link %s is %s", id, st)
	}
	if l.has('U') {
		return nil, fhir.Conflict("link %s has the U flag and serves exactly one file", id)
	}
	var key []byte
	if !(sel.Kind == KindFile && sel.JWE != "") {
		if l.WrappedKey == nil {
			return nil, fhir.Conflict("link %s was made without the L flag, so the server did not keep its key; send the file as \"jwe\" encrypted with the link's key, or create a new link", id)
		}
		if key, err = s.unwrap(l.ID, l.WrappedKey); err != nil {
			return nil, err
		}
	}
	f, err := s.buildFile(ctx, l.Patient, sel, key, s.now())
	if err != nil {
		return nil, err
	}
	err = s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(n), -1) + 1 FROM shl_file WHERE link_id = ?`, id).Scan(&f.N); err != nil {
			return fmt.Errorf("add file to link %s: %w", id, err)
		}
		if err := insertFile(ctx, tx, id, f); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE shl_link SET updated = ? WHERE id = ?`, f.LastUpdated, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}

// Refresh re-reads and re-encrypts an L link's record-based files now,
// as the caller (recipients trigger the same when the record changed).
func (s *Service) Refresh(ctx context.Context, id string) (*Link, error) {
	l, err := s.managedLink(ctx, id)
	if err != nil {
		return nil, err
	}
	if st := l.state(sqldb.Micros(s.now())); st != "active" {
		return nil, fhir.Conflict("link %s is %s", id, st)
	}
	if l.WrappedKey == nil {
		return nil, fhir.Conflict("link %s was made without the L flag; its files are fixed", id)
	}
	if err := s.refresh(ctx, l, true); err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}

// ownerPrincipal is who reads the record when a recipient's request
// refreshes an L link: the owner's token scopes as they were at creation,
// always confined to the link's patient (whatever the owner could see).
func (s *Service) ownerPrincipal(l *link) (access.Principal, error) {
	if l.OwnerScope == "" {
		return confined{patient: l.Patient, name: l.Owner}, nil
	}
	return bearer.NewPrincipal(token.Claims{Subject: l.Owner, Scope: l.OwnerScope, Patient: l.Patient, FHIRUser: "Patient/" + l.Patient})
}

// confined reads one patient's compartment; it stands for owners that
// were not token holders (the command line on a local data directory).
type confined struct{ patient, name string }

func (c confined) Allows(i access.Interaction, _ string) bool {
	return i == access.Read || i == access.Search
}
func (c confined) Patient() string             { return c.patient }
func (c confined) Filters(string) []url.Values { return nil }
func (c confined) Subject() string             { return c.name }

// refresh rebuilds the record-based files of an L link when the record
// changed since they were made (always when force), re-encrypting with
// the same key and a fresh IV.
func (s *Service) refresh(ctx context.Context, l *link, force bool) error {
	fp, err := s.fingerprint(ctx, l.Patient)
	if err != nil {
		return err
	}
	if fp == l.Fingerprint && !force {
		return nil
	}
	key, err := s.unwrap(l.ID, l.WrappedKey)
	if err != nil {
		return err
	}
	files, err := s.files(ctx, s.db, l.ID)
	if err != nil {
		return err
	}
	owner := access.From(ctx) // the owner asking for a refresh, or nobody (a recipient)
	if owner == nil {
		if owner, err = s.ownerPrincipal(l); err != nil {
			return fmt.Errorf("link %s: owner's access: %w", l.ID, err)
		}
	}
	rctx := access.With(ctx, owner)
	now := s.now()
	var fresh []*file
	for _, f := range files {
		if f.Selection.Kind == KindFile {
			continue
		}
		nf, err := s.buildFile(rctx, l.Patient, f.Selection, key, now)
		if err != nil {
			return fmt.Errorf("refresh file %d of link %s: %w", f.N, l.ID, err)
		}
		nf.N = f.N
		fresh = append(fresh, nf)
	}
	return s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		for _, f := range fresh {
			if _, err := tx.Exec(ctx, `UPDATE shl_file SET jwe = ?, last_updated = ? WHERE link_id = ? AND n = ?`, f.JWE, f.LastUpdated, l.ID, f.N); err != nil {
				return fmt.Errorf("refresh link %s: %w", l.ID, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE shl_link SET fingerprint = ? WHERE id = ? AND revoked = 0`, fp, l.ID); err != nil {
			return fmt.Errorf("refresh link %s: %w", l.ID, err)
		}
		l.Fingerprint = fp
		return nil
	})
}
