package shl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/jwe"
	"github.com/phr-project/phr/internal/shlink"
)

// FetchOptions adjust Fetch.
type FetchOptions struct {
	// Recipient says who is asking (required by the protocol; default
	// "phr").
	Recipient string
	// Passcode for P links.
	Passcode string
	// EmbeddedLengthMax is sent in the manifest request when positive.
	EmbeddedLengthMax int
	// Client makes the requests (default: a client with a 2 minute timeout).
	Client *http.Client
	// MaxFile caps each downloaded file and its plaintext (default 128 MiB).
	MaxFile int64
}

// FetchedFile is one decrypted file of a link.
type FetchedFile struct {
	ContentType string
	// Header is the JWE protected header.
	Header      jwe.Header
	Data        []byte
	LastUpdated string
	Status      string
	// Location tells whether the file came from a location URL (rather
	// than embedded in the manifest or, for U links, fetched directly).
	Location bool
}

// RemoteError is an error answer of the link's server.
type RemoteError struct {
	Status int
	// RemainingAttempts is set on 401 (wrong passcode).
	RemainingAttempts *int
	// RetryAfter is set on 429.
	RetryAfter string
	Message    string
}

func (e *RemoteError) Error() string {
	switch {
	case e.Status == http.StatusUnauthorized && e.RemainingAttempts != nil:
		return fmt.Sprintf("wrong or missing passcode (%d attempts left)", *e.RemainingAttempts)
	case e.Status == http.StatusNotFound:
		return "the link is not active (unknown, expired, revoked or disabled)"
	case e.Status == http.StatusTooManyRequests:
		return fmt.Sprintf("polled too often; retry after %s seconds", e.RetryAfter)
	}
	return fmt.Sprintf("the server answered %d: %s", e.Status, e.Message)
}

// Fetch opens a SMART Health Link as a recipient: it asks the link's
// server for the manifest (or, for U links, the file), downloads the files
// and decrypts them with the link's key. It works with any server that
// follows the specification.
func Fetch(ctx context.Context, link string, o FetchOptions) (shlink.Payload, []FetchedFile, error) {
	p, err := shlink.Decode(link)
	if err != nil {
		return p, nil, err
	}
	key, err := p.KeyBytes()
	if err != nil {
		return p, nil, err
	}
	if p.HasFlag('P') && o.Passcode == "" {
		return p, nil, errors.New("the link is protected by a passcode (flag P); give it with --passcode")
	}
	if o.Recipient == "" {
		o.Recipient = "phr"
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 2 * time.Minute}
	}
	if o.MaxFile <= 0 {
		o.MaxFile = 128 << 20
	}
	if exp := p.Exp; exp != 0 && time.Unix(exp, 0).Before(time.Now()) {
		return p, nil, fmt.Errorf("the link expired at %s", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	var out []FetchedFile
	open := func(compact string, f FetchedFile) error {
		plain, h, err := jwe.DecryptLimit(compact, key, o.MaxFile)
		if err != nil {
			return fmt.Errorf("file %d: %w", len(out)+1, err)
		}
		f.Header, f.Data = h, plain
		if f.ContentType == "" {
			f.ContentType = h.Cty
		}
		out = append(out, f)
		return nil
	}
	if p.HasFlag('U') {
		u, err := url.Parse(p.URL)
		if err != nil {
			return p, nil, fmt.Errorf("link url: %w", err)
		}
		q := u.Query()
		q.Set("recipient", o.Recipient)
		u.RawQuery = q.Encode()
		body, err := get(ctx, o, u.String())
		if err != nil {
			return p, nil, err
		}
		return p, out, open(string(body), FetchedFile{})
	}
	req := map[string]any{"recipient": o.Recipient}
	if o.Passcode != "" {
		req["passcode"] = o.Passcode
	}
	if o.EmbeddedLengthMax > 0 {
		req["embeddedLengthMax"] = o.EmbeddedLengthMax
	}
	rb, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(rb))
	if err != nil {
		return p, nil, fmt.Errorf("manifest request: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	body, err := do(o, hr)
	if err != nil {
		return p, nil, err
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return p, nil, fmt.Errorf("the manifest is not JSON: %w", err)
	}
	for i, mf := range m.Files {
		f := FetchedFile{ContentType: mf.ContentType, LastUpdated: mf.LastUpdated, Status: mf.Status}
		switch {
		case mf.Embedded != "" && mf.Location != "":
			return p, out, fmt.Errorf("manifest file %d has both embedded and location", i)
		case mf.Embedded != "":
			if err := open(mf.Embedded, f); err != nil {
				return p, out, err
			}
		case mf.Location != "":
			b, err := get(ctx, o, mf.Location)
			if err != nil {
				return p, out, fmt.Errorf("file %d: %w", i, err)
			}
			f.Location = true
			if err := open(string(b), f); err != nil {
				return p, out, err
			}
		default:
			return p, out, fmt.Errorf("manifest file %d has neither embedded nor location", i)
		}
	}
	return p, out, nil
}

func get(ctx context.Context, o FetchOptions, u string) ([]byte, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Accept", "application/jose")
	return do(o, hr)
}

// do runs a request and returns the body of a 200 answer, bounded by
// MaxFile, or a RemoteError.
func do(o FetchOptions, hr *http.Request) ([]byte, error) {
	resp, err := o.Client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := 4*o.MaxFile/3 + 1<<16 // base64url of the largest file, plus headers
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", hr.Method, redact(hr.URL), err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d bytes", hr.Method, redact(hr.URL), limit)
	}
	if resp.StatusCode == http.StatusOK {
		return body, nil
	}
	re := &RemoteError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
	var e struct {
		RemainingAttempts *int `json:"remainingAttempts"`
		Issue             []struct {
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &e) == nil {
		re.RemainingAttempts = e.RemainingAttempts
		if len(e.Issue) > 0 {
			re.Message = e.Issue[0].Diagnostics
		}
	}
	if re.Message == "" {
		re.Message = strings.TrimSpace(string(body[:min(len(body), 200)]))
	}
	return nil, re
}

// redact shows a capability URL without its secret path and query.
func redact(u *url.URL) string { return u.Scheme + "://" + u.Host + "/..." }
