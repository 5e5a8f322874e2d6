package shl

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/auth/password"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/shlink"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// ManifestRequest is the body a recipient POSTs to a manifest URL.
type ManifestRequest struct {
	Recipient         string `json:"recipient"`
	Passcode          string `json:"passcode,omitempty"`
	EmbeddedLengthMax *int   `json:"embeddedLengthMax,omitempty"`
}

// Manifest is the answer to a manifest request.
type Manifest struct {
	Files []ManifestFile `json:"files"`
}

// ManifestFile is one file of a manifest: exactly one of Embedded and
// Location is set.
type ManifestFile struct {
	ContentType string `json:"contentType"`
	Embedded    string `json:"embedded,omitempty"`
	Location    string `json:"location,omitempty"`
	LastUpdated string `json:"lastUpdated,omitempty"`
	Status      string `json:"status,omitempty"`
	FHIRVersion string `json:"fhirVersion,omitempty"`
}

// PasscodeError answers a wrong or missing passcode (401).
type PasscodeError struct {
	// Remaining is the number of wrong passcodes the link still accepts.
	Remaining int
}

func (e *PasscodeError) Error() string {
	return fmt.Sprintf("wrong or missing passcode; %d attempts left", e.Remaining)
}

// PollError answers a recipient polling an L link too often (429).
type PollError struct {
	RetryAfter time.Duration
}

func (e *PollError) Error() string {
	return fmt.Sprintf("polled too often; retry after %s", e.RetryAfter)
}

// Access is one entry of a link's access log.
type Access struct {
	At        string `json:"at"`
	Recipient string `json:"recipient"`
	// Action is manifest, location (a file fetched from a location URL)
	// or direct (a U link's GET).
	Action string `json:"action"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// logAccess records a recipient's access; failures to log are logged.
func (s *Service) logAccess(ctx context.Context, linkID, recipient, action string, status int, detail string) {
	if len(recipient) > 200 {
		recipient = recipient[:200]
	}
	_, err := s.db.Exec(context.WithoutCancel(ctx), `INSERT INTO shl_access (link_id, at, recipient, action, status, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		linkID, sqldb.Micros(s.now()), recipient, action, status, detail)
	if err != nil {
		slog.ErrorContext(ctx, "shl: record access", "link", linkID, "error", err)
	}
}

// AccessLog returns a link's access log, newest first.
func (s *Service) AccessLog(ctx context.Context, id string) ([]Access, error) {
	if _, err := s.managedLink(ctx, id); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT at, recipient, action, status, detail FROM shl_access WHERE link_id = ? ORDER BY id DESC`, id)
	if err != nil {
		return nil, fmt.Errorf("access log of link %s: %w", id, err)
	}
	defer rows.Close()
	out := []Access{}
	for rows.Next() {
		var a Access
		var at int64
		if err := rows.Scan(&at, &a.Recipient, &a.Action, &a.Status, &a.Detail); err != nil {
			return nil, fmt.Errorf("access log of link %s: %w", id, err)
		}
		a.At = instant(at)
		out = append(out, a)
	}
	return out, rows.Err()
}

// active finds the link of a manifest id and checks it can be used.
func (s *Service) active(ctx context.Context, mid, recipient, action string) (*link, error) {
	if len(mid) < 43 {
		return nil, notActive()
	}
	l, err := s.linkByManifest(ctx, s.db, mid)
	if err != nil {
		return nil, err
	}
	if st := l.state(sqldb.Micros(s.now())); st != "active" {
		s.logAccess(ctx, l.ID, recipient, action, 404, "link "+st)
		return nil, notActive()
	}
	return l, nil
}

// Manifest answers a recipient's manifest request.
func (s *Service) Manifest(ctx context.Context, mid string, req *ManifestRequest) (*Manifest, error) {
	l, err := s.active(ctx, mid, req.Recipient, "manifest")
	if err != nil {
		return nil, err
	}
	if req.Recipient == "" {
		s.logAccess(ctx, l.ID, "", "manifest", 400, "no recipient")
		return nil, fhir.BadRequest("recipient is required: say who is asking (e.g. the organization or person)").AtPath("recipient")
	}
	limit := s.o.EmbedDefault
	if req.EmbeddedLengthMax != nil {
		if *req.EmbeddedLengthMax < 0 {
			return nil, fhir.BadRequest("embeddedLengthMax must not be negative").AtPath("embeddedLengthMax")
		}
		limit = *req.EmbeddedLengthMax
	}
	if l.has('P') {
		if err := s.checkPasscode(ctx, l, req.Recipient, req.Passcode); err != nil {
			return nil, err
		}
	}
	if err := s.checkPoll(ctx, l, req.Recipient, "manifest"); err != nil {
		return nil, err
	}
	files, err := s.currentFiles(ctx, l)
	if err != nil {
		return nil, err
	}
	m := &Manifest{Files: []ManifestFile{}}
	now := s.now()
	var locations int
	for _, f := range files {
		mf := ManifestFile{ContentType: f.ContentType, LastUpdated: instant(f.LastUpdated), Status: f.status(l)}
		if f.ContentType == "application/fhir+json" {
			mf.FHIRVersion = "4.0.1"
		}
		if len(f.JWE) <= limit {
			mf.Embedded = f.JWE
		} else {
			tok := shlink.NewManifestID()
			exp := now.Add(s.o.LocationTTL)
			err := s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
				if _, err := tx.Exec(ctx, `DELETE FROM shl_location WHERE expires < ?`, sqldb.Micros(now)); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO shl_location (token_hash, link_id, n, recipient, expires) VALUES (?, ?, ?, ?, ?)`,
					hashID(tok), l.ID, f.N, req.Recipient, sqldb.Micros(exp))
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("location for link %s: %w", l.ID, err)
			}
			mf.Location = s.base + "/shl/f/" + tok
			locations++
		}
		m.Files = append(m.Files, mf)
	}
	s.logAccess(ctx, l.ID, req.Recipient, "manifest", 200, fmt.Sprintf("%d files (%d embedded, %d by location)", len(files), len(files)-locations, locations))
	return m, nil
}

// currentFiles refreshes an L link's files when the record changed and
// returns the link's files.
func (s *Service) currentFiles(ctx context.Context, l *link) ([]*file, error) {
	if l.has('L') && l.WrappedKey != nil {
		// One refresh per link at a time in this process: recipients
		// arriving together after a change wait for it rather than each
		// rebuilding the files.
		mu, _ := s.refreshing.LoadOrStore(l.ID, &sync.Mutex{})
		mu.(*sync.Mutex).Lock()
		defer mu.(*sync.Mutex).Unlock()
		if cur, err := s.getLink(ctx, s.db, l.ID); err == nil {
			l.Fingerprint = cur.Fingerprint
		}
		if err := s.refresh(ctx, l, false); err != nil {
			// The files made before still decrypt; serve them rather than fail.
			slog.ErrorContext(ctx, "shl: refresh L link", "link", l.ID, "error", err)
		}
	}
	return s.files(ctx, s.db, l.ID)
}

// checkPasscode verifies a passcode. Every attempt first takes one of the
// link's lifetime attempts in one atomic statement (so parallel guesses
// can never exceed the limit, and a used-up link answers at once without
// hashing), and a right passcode gives it back.
func (s *Service) checkPasscode(ctx context.Context, l *link, recipient, pc string) error {
	var left int
	err := s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		return tx.QueryRow(ctx, `UPDATE shl_link SET attempts_left = attempts_left - 1 WHERE id = ? AND attempts_left > 0 AND revoked = 0 RETURNING attempts_left`, l.ID).Scan(&left)
	})
	if errors.Is(err, sql.ErrNoRows) {
		s.logAccess(ctx, l.ID, recipient, "manifest", 404, "link exhausted")
		return notActive()
	}
	if err != nil {
		return fmt.Errorf("count passcode attempt on link %s: %w", l.ID, err)
	}
	ok := false
	if pc != "" {
		ok, err = password.Verify(ctx, pc, l.PasscodeHash)
	}
	if ok && err == nil {
		_, err = s.db.Exec(context.WithoutCancel(ctx), `UPDATE shl_link SET attempts_left = attempts_left + 1 WHERE id = ? AND revoked = 0`, l.ID)
		if err != nil {
			return fmt.Errorf("passcode attempt on link %s: %w", l.ID, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("verify passcode of link %s: %w", l.ID, err)
	}
	detail := "wrong passcode"
	if pc == "" {
		detail = "no passcode"
	}
	s.logAccess(ctx, l.ID, recipient, "manifest", 401, fmt.Sprintf("%s; %d attempts left", detail, left))
	return &PasscodeError{Remaining: left}
}

// checkPoll limits how often one recipient may fetch an L link's
// manifest: the stored time only moves when the interval has passed,
// in one statement.
func (s *Service) checkPoll(ctx context.Context, l *link, recipient, action string) error {
	if !l.has('L') || s.o.MinPoll < 0 {
		return nil
	}
	now := sqldb.Micros(s.now())
	minPoll := s.o.MinPoll.Microseconds()
	var allowed bool
	var last int64
	err := s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.Exec(ctx, `INSERT INTO shl_poll (link_id, recipient, last) VALUES (?, ?, ?)
ON CONFLICT (link_id, recipient) DO UPDATE SET last = excluded.last WHERE shl_poll.last <= ?`, l.ID, recipient, now, now-minPoll)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if allowed = n > 0; !allowed {
			return tx.QueryRow(ctx, `SELECT last FROM shl_poll WHERE link_id = ? AND recipient = ?`, l.ID, recipient).Scan(&last)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("polling limit of link %s: %w", l.ID, err)
	}
	if allowed {
		return nil
	}
	wait := time.Duration(last+minPoll-now) * time.Microsecond
	s.logAccess(ctx, l.ID, recipient, action, 429, "polled too often")
	return &PollError{RetryAfter: max(wait, time.Second)}
}

// Location returns the JWE behind a location URL.
func (s *Service) Location(ctx context.Context, tok string) (string, error) {
	var linkID, recipient string
	var n int
	err := s.db.QueryRow(ctx, `SELECT link_id, n, recipient FROM shl_location WHERE token_hash = ? AND expires > ?`, hashID(tok), sqldb.Micros(s.now())).
		Scan(&linkID, &n, &recipient)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fhir.NotFound("no file at this location (unknown or expired; locations last %s - fetch the manifest again)", s.o.LocationTTL)
	}
	if err != nil {
		return "", fmt.Errorf("read location: %w", err)
	}
	l, err := s.getLink(ctx, s.db, linkID)
	if err != nil {
		return "", err
	}
	if st := l.state(sqldb.Micros(s.now())); st != "active" {
		s.logAccess(ctx, l.ID, recipient, "location", 404, "link "+st)
		return "", notActive()
	}
	files, err := s.files(ctx, s.db, l.ID)
	if err != nil {
		return "", err
	}
	for _, f := range files {
		if f.N == n && f.JWE != "" {
			s.logAccess(ctx, l.ID, recipient, "location", 200, fmt.Sprintf("file %d", n))
			return f.JWE, nil
		}
	}
	return "", notActive()
}

// Direct serves a U link's single file to GET <url>?recipient=.
func (s *Service) Direct(ctx context.Context, mid, recipient string) (string, error) {
	l, err := s.active(ctx, mid, recipient, "direct")
	if err != nil {
		return "", err
	}
	if !l.has('U') {
		s.logAccess(ctx, l.ID, recipient, "direct", 405, "GET on a link without the U flag")
		return "", fhir.Errorf(405, "not-supported", "this link has no U flag: POST a manifest request (recipient, passcode) instead of GET")
	}
	if recipient == "" {
		s.logAccess(ctx, l.ID, "", "direct", 400, "no recipient")
		return "", fhir.BadRequest("the recipient query parameter is required").AtPath("recipient")
	}
	if err := s.checkPoll(ctx, l, recipient, "direct"); err != nil {
		return "", err
	}
	files, err := s.currentFiles(ctx, l)
	if err != nil {
		return "", err
	}
	if len(files) == 0 || files[0].JWE == "" {
		return "", notActive()
	}
	s.logAccess(ctx, l.ID, recipient, "direct", 200, "file 0")
	return files[0].JWE, nil
}
