// Package bulkclient is a FHIR Bulk Data Access client: it kicks off an
// export on any server, polls its status URL as Retry-After says, and
// downloads the files of the manifest (gzip when the server offers it),
// with a fixed bearer token or SMART Backend Services authorization (a
// client assertion signed with the client's private key, RS384 or ES384).
//
// `phr bulk export` drives it; `phr clone` and `phr pull` use it to copy
// other servers' records.
package bulkclient

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/phr-project/phr/internal/cid"
	"github.com/phr-project/phr/internal/fhir"
)

// TokenSource returns a bearer token for the server.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a fixed bearer token.
type StaticToken string

// Token implements TokenSource.
func (t StaticToken) Token(context.Context) (string, error) { return string(t), nil }

// Client talks to one FHIR server's Bulk Data API.
type Client struct {
	// Base is the FHIR base URL (e.g. https://example.org/fhir).
	Base string
	// Tokens authorizes requests (nil: none).
	Tokens TokenSource
	// HTTP is the HTTP client (default: one with a 5-minute timeout per
	// request without the transport's transparent gzip, which this client
	// handles itself).
	HTTP *http.Client
	// MaxWait caps the wait between polls whatever Retry-After says
	// (default 1 minute); MinWait is the wait when the server gives none
	// (default 1s).
	MaxWait, MinWait time.Duration
}

// Request describes an export.
type Request struct {
	// Group exports the members of Group/[Group]; Patient exports all
	// patients (level [base]/Patient/$export); neither: system level.
	Group   string
	Patient bool
	// Since and Until bound meta.lastUpdated (zero: no bound).
	Since, Until time.Time
	// Types, TypeFilters, Elements are the _type, _typeFilter and
	// _elements parameters.
	Types       []string
	TypeFilters []string
	Elements    []string
	// Patients restricts a Patient or Group export to those ids (sent with
	// POST, as the patient parameter must be).
	Patients []string
	// Lenient asks the server to ignore parameters it does not support
	// (Prefer: handling=lenient) and list them in the manifest's errors.
	Lenient bool
}

// Manifest is the completion manifest.
type Manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	Output              []File `json:"output"`
	Deleted             []File `json:"deleted,omitempty"`
	Error               []File `json:"error"`
}

// File is one item of a manifest.
type File struct {
	Type      string         `json:"type"`
	URL       string         `json:"url"`
	Count     int64          `json:"count,omitempty"`
	Extension map[string]any `json:"extension,omitempty"`
}

// Status is what a poll found while the export runs.
type Status struct {
	// Progress is the X-Progress header (free text).
	Progress string
	// Percent, Total and Done come from the phr-style JSON body when the
	// server sends one (-1 when unknown).
	Percent     int
	Total, Done int64
	// RetryAfter is the wait the server asked for.
	RetryAfter time.Duration
}

// Error is an error response of the server.
type Error struct {
	Status int
	// Message is the OperationOutcome's diagnostics (or the body).
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, DisableCompression: true}}
}

func (c *Client) do(ctx context.Context, method, u string, body []byte, header http.Header, auth bool) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if auth && c.Tokens != nil {
		tok, err := c.Tokens.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("get an access token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(u), err)
	}
	return resp, nil
}

// redact drops the query of a URL for messages (it may hold filters).
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?..."
	}
	return u
}

// responseError reads an error response (OperationOutcome or text).
func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(b))
	if issues, ok := fhir.ParseOutcome(b); ok && len(issues) > 0 {
		var parts []string
		for _, is := range issues {
			parts = append(parts, is.Text())
		}
		msg = strings.Join(parts, "; ")
	}
	if ct := strings.ToLower(resp.Header.Get("Content-Type")); strings.HasPrefix(ct, "text/html") {
		// A web page (a portal's or a proxy's) rather than a FHIR
		// answer: most often a URL that is not the FHIR base.
		msg = http.StatusText(resp.StatusCode) + " (an HTML page, not a FHIR response: is the URL the server's FHIR base, such as https://host/fhir?)"
	}
	if len(msg) > 2000 {
		cut := 2000
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

// KickOff starts an export and returns its status URL.
func (c *Client) KickOff(ctx context.Context, r Request) (string, error) {
	base := strings.TrimSuffix(c.Base, "/")
	path := base + "/$export"
	switch {
	case r.Group != "":
		path = base + "/Group/" + url.PathEscape(r.Group) + "/$export"
	case r.Patient || len(r.Patients) > 0:
		path = base + "/Patient/$export"
	}
	q := url.Values{}
	q.Set("_outputFormat", "application/fhir+ndjson")
	if !r.Since.IsZero() {
		q.Set("_since", r.Since.UTC().Format(time.RFC3339Nano))
	}
	if !r.Until.IsZero() {
		q.Set("_until", r.Until.UTC().Format(time.RFC3339Nano))
	}
	if len(r.Types) > 0 {
		q.Set("_type", strings.Join(r.Types, ","))
	}
	for _, f := range r.TypeFilters {
		q.Add("_typeFilter", f)
	}
	if len(r.Elements) > 0 {
		q.Set("_elements", strings.Join(r.Elements, ","))
	}
	h := http.Header{}
	h.Set("Accept", "application/fhir+json")
	prefer := "respond-async"
	if r.Lenient {
		prefer += ", handling=lenient"
	}
	h.Set("Prefer", prefer)
	method, target := http.MethodGet, path+"?"+q.Encode()
	var body []byte
	if len(r.Patients) > 0 {
		// The patient parameter needs POST with a Parameters body.
		var params []map[string]any
		for k, vs := range q {
			for _, v := range vs {
				params = append(params, map[string]any{"name": k, "valueString": v})
			}
		}
		for _, p := range r.Patients {
			params = append(params, map[string]any{"name": "patient", "valueReference": map[string]any{"reference": "Patient/" + p}})
		}
		body, _ = json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": params})
		method, target = http.MethodPost, path
		h.Set("Content-Type", "application/fhir+json")
	}
	resp, err := c.do(ctx, method, target, body, h, true)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("kick-off %s: %w", redact(target), responseError(resp))
	}
	loc := resp.Header.Get("Content-Location")
	if loc == "" {
		return "", fmt.Errorf("kick-off %s: 202 without a Content-Location header", redact(target))
	}
	// A relative status URL (some servers) is resolved against the request.
	ref, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("kick-off: bad Content-Location %q: %w", loc, err)
	}
	return resp.Request.URL.ResolveReference(ref).String(), nil
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func (c *Client) retryAfter(h string) time.Duration {
	minW, maxW := c.MinWait, c.MaxWait
	if minW <= 0 {
		minW = time.Second
	}
	if maxW <= 0 {
		maxW = time.Minute
	}
	d := minW
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = time.Until(t)
	}
	return min(max(d, minW), maxW)
}

// Wait polls the status URL until the export completes and returns its
// manifest; progress (may be nil) is told each in-progress status.
func (c *Client) Wait(ctx context.Context, statusURL string, progress func(Status)) (*Manifest, error) {
	h := http.Header{}
	h.Set("Accept", "application/json")
	for {
		resp, err := c.do(ctx, http.MethodGet, statusURL, nil, h, true)
		if err != nil {
			return nil, err
		}
		switch resp.StatusCode {
		case http.StatusOK:
			var m Manifest
			err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&m)
			resp.Body.Close()
			if err != nil {
				return nil, fmt.Errorf("the manifest is not valid JSON: %w", err)
			}
			return &m, nil
		case http.StatusAccepted, http.StatusTooManyRequests:
			st := Status{Progress: resp.Header.Get("X-Progress"), Percent: -1, RetryAfter: c.retryAfter(resp.Header.Get("Retry-After"))}
			if resp.StatusCode == http.StatusAccepted {
				var body struct {
					Progress           *int  `json:"progress"`
					TotalResources     int64 `json:"totalResources"`
					ProcessedResources int64 `json:"processedResources"`
				}
				if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); strings.HasSuffix(mt, "json") {
					if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body) == nil && body.Progress != nil {
						st.Percent, st.Total, st.Done = *body.Progress, body.TotalResources, body.ProcessedResources
					}
				}
				if progress != nil {
					progress(st)
				}
			}
			resp.Body.Close()
			t := time.NewTimer(st.RetryAfter)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		default:
			err := responseError(resp)
			resp.Body.Close()
			return nil, fmt.Errorf("export status: %w", err)
		}
	}
}

// Cancel cancels an export (DELETE on its status URL).
func (c *Client) Cancel(ctx context.Context, statusURL string) error {
	resp, err := c.do(ctx, http.MethodDelete, statusURL, nil, nil, true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("cancel: %w", responseError(resp))
	}
	return nil
}

// Download writes the file f to w (decompressed), sending the bearer
// token when the manifest requires it. When the item carries a cid
// extension, the content is checked against it.
func (c *Client) Download(ctx context.Context, m *Manifest, f File, w io.Writer) (int64, error) {
	h := http.Header{}
	h.Set("Accept", "application/fhir+ndjson")
	h.Set("Accept-Encoding", "gzip")
	resp, err := c.do(ctx, http.MethodGet, f.URL, nil, h, m.RequiresAccessToken)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("download %s: %w", redact(f.URL), responseError(resp))
	}
	var body io.Reader = resp.Body
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return 0, fmt.Errorf("download %s: %w", redact(f.URL), err)
		}
		defer zr.Close()
		body = zr
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, sum), body)
	if err != nil {
		return n, fmt.Errorf("download %s: %w", redact(f.URL), err)
	}
	if want, _ := f.Extension["cid"].(string); want != "" && cid.Valid(want) {
		if got := cid.FromDigest(sum.Sum(nil)); got != want {
			return n, fmt.Errorf("download %s: content has CID %s, the manifest says %s", redact(f.URL), got, want)
		}
	}
	return n, nil
}

// Result is what Export wrote.
type Result struct {
	Manifest *Manifest
	// Files are the paths written, in manifest order (output, deleted, error).
	Files []string
	// Resources counts the output lines per type.
	Resources map[string]int64
}

// Export runs a whole export into dir: the files as Type-N.ndjson (deleted
// and error files prefixed), and manifest.json. log (may be nil) gets
// progress lines.
func (c *Client) Export(ctx context.Context, r Request, dir string, log func(format string, args ...any)) (*Result, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	status, err := c.KickOff(ctx, r)
	if err != nil {
		return nil, err
	}
	log("export started: %s", status)
	m, err := c.Wait(ctx, status, func(s Status) {
		switch {
		case s.Progress != "":
			log("in progress: %s", s.Progress)
		case s.Percent >= 0:
			log("in progress: %d%%", s.Percent)
		default:
			log("in progress")
		}
	})
	if err != nil {
		return nil, err
	}
	res := &Result{Manifest: m, Resources: map[string]int64{}}
	seq := map[string]int{}
	for _, group := range []struct {
		prefix string
		files  []File
	}{{"", m.Output}, {"deleted-", m.Deleted}, {"error-", m.Error}} {
		for _, f := range group.files {
			if !safeName(f.Type) {
				return res, fmt.Errorf("the manifest names a strange type %q", f.Type)
			}
			seq[group.prefix+f.Type]++
			path := filepath.Join(dir, fmt.Sprintf("%s%s-%d.ndjson", group.prefix, f.Type, seq[group.prefix+f.Type]))
			lines, err := c.downloadFile(ctx, m, f, path)
			if err != nil {
				return res, err
			}
			if group.prefix == "" {
				res.Resources[f.Type] += lines
			}
			res.Files = append(res.Files, path)
			log("downloaded %s (%d lines)", filepath.Base(path), lines)
		}
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), mb, 0o600); err != nil {
		return res, fmt.Errorf("write manifest.json: %w", err)
	}
	return res, nil
}

func safeName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// lineCounter counts newline-terminated lines written through it.
type lineCounter struct{ n int64 }

func (l *lineCounter) Write(p []byte) (int, error) {
	l.n += int64(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

func (c *Client) downloadFile(ctx context.Context, m *Manifest, f File, path string) (int64, error) {
	tmp := path + ".part"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(out, 256<<10)
	var lc lineCounter
	_, err = c.Download(ctx, m, f, io.MultiWriter(bw, &lc))
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, err
	}
	return lc.n, nil
}

// ErrNoToken is returned by token sources that cannot get a token.
var ErrNoToken = errors.New("no access token")
