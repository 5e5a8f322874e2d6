package sphr

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/zipaes"
)

// Reader reads the resources and attachment files of a .sphr (or any zip
// of .phr/.ndjson/.json files, encrypted or not). Only the central
// directory is held in memory; resource files are read line by line.
type Reader struct {
	z      *zipaes.Reader
	files  []*zipaes.File
	byName map[string]*zipaes.File

	// MaxLine caps one NDJSON line, and a .json file read whole (default 64 MiB).
	MaxLine int
	// MaxInline caps an attachment file that Restore inlines as base64
	// (default 64 MiB); use Attachment to stream bigger ones.
	MaxInline int64

	idx     int    // next file to open
	name    string // file being read
	rc      io.ReadCloser
	br      *bufio.Reader
	line    int
	pending [][]byte // resources of a .json file read whole
}

// Line is one resource of the archive as written there.
type Line struct {
	// File is the archive path of the resource file; Number the 1-based
	// line (or, for a Bundle in a .json file, entry) number.
	File   string
	Number int
	// JSON is the line without its newline.
	JSON []byte
}

// Open reads the archive's directory. passphrase may be empty for a plain
// zip; for an encrypted one a missing or wrong passphrase makes Next fail
// with an error wrapping zipaes.ErrPassphraseRequired or ErrWrongPassphrase.
func Open(r io.ReaderAt, size int64, passphrase string) (*Reader, error) {
	z, err := zipaes.NewReader(r, size, passphrase)
	if err != nil {
		return nil, fmt.Errorf("sphr: %w", err)
	}
	rd := &Reader{z: z, byName: map[string]*zipaes.File{}, MaxLine: 64 << 20, MaxInline: 64 << 20}
	for _, f := range z.File {
		if ignored(f.Name) || strings.HasSuffix(f.Name, "/") {
			continue
		}
		rd.byName[f.Name] = f
		switch strings.ToLower(path.Ext(f.Name)) {
		case ".phr", ".ndjson", ".json":
			rd.files = append(rd.files, f)
		}
	}
	if len(rd.files) == 0 {
		return nil, errors.New("sphr: the archive holds no .phr, .ndjson or .json file")
	}
	return rd, nil
}

// ignored reports whether an entry is operating-system junk (__MACOSX/,
// .DS_Store, AppleDouble "._" files).
func ignored(name string) bool {
	base := path.Base(name)
	return strings.HasPrefix(name, "__MACOSX/") || strings.Contains(name, "/__MACOSX/") || base == ".DS_Store" || strings.HasPrefix(base, "._")
}

// Files lists the resource files found, in archive order.
func (r *Reader) Files() []string {
	out := make([]string, len(r.files))
	for i, f := range r.files {
		out[i] = f.Name
	}
	return out
}

// Has reports whether the archive has a (non-junk) file at name.
func (r *Reader) Has(name string) bool { return r.byName[name] != nil }

// Next returns the next resource, across all resource files; io.EOF after
// the last. Blank lines are skipped. A .json file (or a .phr that is not
// NDJSON) is read whole as one document; a Bundle gives its entries (a
// transaction or batch Bundle is returned whole).
func (r *Reader) Next() (*Line, error) {
	for {
		if len(r.pending) > 0 {
			r.line++
			l := &Line{File: r.name, Number: r.line, JSON: r.pending[0]}
			r.pending = r.pending[1:]
			return l, nil
		}
		if r.br != nil {
			b, err := r.readLine()
			if len(b) > 0 {
				return &Line{File: r.name, Number: r.line, JSON: b}, nil
			}
			if err == io.EOF {
				r.closeCurrent()
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("sphr: %s line %d: %w", r.name, r.line, err)
			}
		}
		if r.idx >= len(r.files) {
			return nil, io.EOF
		}
		f := r.files[r.idx]
		r.idx++
		if err := r.open(f); err != nil {
			return nil, err
		}
	}
}

// Close releases the file being read.
func (r *Reader) Close() error {
	r.closeCurrent()
	return nil
}

func (r *Reader) closeCurrent() {
	if r.rc != nil {
		r.rc.Close()
	}
	r.rc, r.br = nil, nil
}

func (r *Reader) open(f *zipaes.File) error {
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("sphr: open %s: %w", f.Name, err)
	}
	r.rc, r.name, r.line = rc, f.Name, 0
	r.br = bufio.NewReaderSize(rc, 64<<10)
	// A file whose first line is not a complete JSON value is one JSON
	// document (a pretty-printed resource or Bundle): read it whole.
	whole := strings.EqualFold(path.Ext(f.Name), ".json")
	if !whole {
		first, _ := r.br.Peek(1 << 16)
		full := len(first) == 1<<16
		first = bytes.TrimLeft(first, " \t\r\n\ufeff")
		nl := bytes.IndexByte(first, '\n')
		switch {
		case nl < 0 && full:
			// A first line longer than the peek is minified JSON: a
			// line of NDJSON, unless a Bundle starts there.
			whole = bytes.HasPrefix(first, []byte(`{"resourceType":"Bundle"`))
		case nl < 0:
			whole = len(first) > 0 && !json.Valid(bytes.TrimSpace(first))
		default:
			whole = !json.Valid(bytes.TrimSpace(first[:nl]))
		}
	}
	if !whole {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(r.br, int64(r.MaxLine)+1))
	r.closeCurrent()
	if err != nil {
		return fmt.Errorf("sphr: read %s: %w", f.Name, err)
	}
	if len(data) > r.MaxLine {
		return fmt.Errorf("sphr: %s is larger than %d bytes and not NDJSON", f.Name, r.MaxLine)
	}
	r.pending, err = splitDocument(data)
	if err != nil {
		return fmt.Errorf("sphr: %s: %w", f.Name, err)
	}
	return nil
}

// readLine returns the next non-blank line (without line end).
func (r *Reader) readLine() ([]byte, error) {
	for {
		var line []byte
		for {
			frag, err := r.br.ReadSlice('\n')
			if len(line)+len(frag) > r.MaxLine {
				return nil, fmt.Errorf("line longer than %d bytes", r.MaxLine)
			}
			if err == bufio.ErrBufferFull {
				line = append(line, frag...)
				continue
			}
			if len(line) == 0 {
				line = append([]byte(nil), frag...)
			} else {
				line = append(line, frag...)
			}
			if err != nil && err != io.EOF {
				return nil, err
			}
			r.line++
			line = bytes.TrimSpace(line)
			if r.line == 1 {
				line = bytes.TrimPrefix(line, []byte("\ufeff"))
			}
			if len(line) > 0 {
				return line, nil
			}
			if err == io.EOF {
				return nil, io.EOF
			}
			break
		}
	}
}

// splitDocument turns one JSON document into resources: a Bundle's entries
// (unless it is a transaction or batch), or the document itself. A
// document that is a JSON string holding JSON (seen in the wild) is
// decoded once more.
func splitDocument(data []byte) ([][]byte, error) {
	data = bytes.TrimPrefix(bytes.TrimSpace(data), []byte("\ufeff"))
	if len(data) == 0 {
		return nil, nil
	}
	v, err := fhirjson.Parse(data)
	if err != nil {
		return nil, err
	}
	if v.Kind == fhirjson.String {
		if v, err = fhirjson.Parse([]byte(v.Str)); err != nil {
			return nil, fmt.Errorf("a JSON string that does not hold JSON: %w", err)
		}
	}
	if v.Kind != fhirjson.Object {
		return nil, fmt.Errorf("expected a JSON object, found %s", v.Kind)
	}
	if v.GetString("resourceType") != "Bundle" {
		return [][]byte{v.Marshal()}, nil
	}
	switch v.GetString("type") {
	case "transaction", "batch":
		return [][]byte{v.Marshal()}, nil
	}
	var out [][]byte
	if entries := v.Get("entry"); entries != nil && entries.Kind == fhirjson.Array {
		for _, e := range entries.Items {
			if res := e.Get("resource"); res != nil {
				out = append(out, res.Marshal())
			}
		}
	}
	return out, nil
}

// Attachment opens the file that url, relative to the resource file
// phrFile, names; it returns the file's size.
func (r *Reader) Attachment(phrFile, url string) (io.ReadCloser, int64, error) {
	name, ok := resolve(phrFile, url)
	if !ok {
		return nil, 0, fmt.Errorf("sphr: %q is not a relative URL of a file in the archive", url)
	}
	f := r.byName[name]
	if f == nil {
		return nil, 0, fmt.Errorf("sphr: %s refers to %q, which the archive does not hold", phrFile, url)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, 0, fmt.Errorf("sphr: open %s: %w", name, err)
	}
	return rc, int64(f.Size), nil
}

// BinaryFile returns the relative URL of the file holding the content of a
// Binary line written by WriteBinary ("" when the line has none), so that
// an importer can stream it (Attachment) instead of inlining it.
func BinaryFile(l *Line) string {
	if !bytes.Contains(l.JSON, []byte(ExtFile)) {
		return ""
	}
	v, err := fhirjson.Parse(l.JSON)
	if err != nil || v.GetString("resourceType") != "Binary" {
		return ""
	}
	if d := v.Get("_data"); d != nil {
		return fileExtension(d)
	}
	return ""
}

// Restore returns the resource of a line as it was exported: content the
// writer moved to files is read back into data (in place), urls it added
// are removed, and its extensions dropped. Attachments without data whose
// url names a file of the archive (the IG's "./xr-chest.jpg") get the
// file's content as data in place of the url. Other lines come back
// unchanged.
func (r *Reader) Restore(l *Line) ([]byte, error) {
	if !bytes.Contains(l.JSON, []byte(ExtFile)) && !bytes.Contains(l.JSON, []byte(`"url"`)) {
		return l.JSON, nil
	}
	out, _, err := restore(l.JSON, func(rel string) (string, bool, error) {
		name, ok := resolve(l.File, rel)
		if !ok || r.byName[name] == nil {
			return "", false, nil
		}
		data, err := r.inline(l.File, rel)
		return data, err == nil, err
	}, true)
	if err != nil {
		return nil, fmt.Errorf("sphr: %s line %d: %w", l.File, l.Number, err)
	}
	return out, nil
}

// RestoreJSON undoes what the writer did to one resource (see Restore)
// for readers that open the archive themselves: open returns the bytes of
// the file at a URL relative to the resource's .phr file. Only the
// writer's ExtFile markers are restored; other relative URLs are left for
// the caller. changed reports whether raw was changed.
func RestoreJSON(raw []byte, open func(rel string) ([]byte, error)) (out []byte, changed bool, err error) {
	if !bytes.Contains(raw, []byte(ExtFile)) {
		return raw, false, nil
	}
	return restore(raw, func(rel string) (string, bool, error) {
		b, err := open(rel)
		if err != nil {
			return "", false, err
		}
		return base64.StdEncoding.EncodeToString(b), true, nil
	}, false)
}

// IsCoverPage reports whether a resource is the Composition cover page an
// export generated (tagged CoverTagSystem/CoverTagCode): an import should
// not store it, since every export makes its own.
func IsCoverPage(raw []byte) bool {
	if !bytes.Contains(raw, []byte(CoverTagSystem)) {
		return false
	}
	v, err := fhirjson.Parse(raw)
	if err != nil || v.GetString("resourceType") != "Composition" {
		return false
	}
	tags := v.Get("meta").Get("tag")
	if tags == nil || tags.Kind != fhirjson.Array {
		return false
	}
	for _, t := range tags.Items {
		if t.GetString("system") == CoverTagSystem && t.GetString("code") == CoverTagCode {
			return true
		}
	}
	return false
}

// StoreFragment starts the fragment with which an export's cover page
// names the store it came from (StoreFragment and the store's id), after
// a FHIR base that does not name one server: a loopback address, which
// every phr serve has by default. Two such stores are two sources.
const StoreFragment = "store-"

// CoverSource returns the meta.source of an export's cover page: the FHIR
// base of the server that exported it, an http(s) URL without a trailing
// slash, and without a fragment unless the fragment names the store
// (StoreFragment: a base on a loopback address). "" when raw is not a
// cover page or has no such source.
func CoverSource(raw []byte) string {
	if !IsCoverPage(raw) {
		return ""
	}
	v, _ := fhirjson.Parse(raw)
	s, frag, _ := strings.Cut(v.Get("meta").GetString("source"), "#")
	if u, err := url.Parse(s); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return ""
	}
	s = strings.TrimSuffix(s, "/")
	if id, ok := strings.CutPrefix(frag, StoreFragment); ok && storeID(id) {
		s += "#" + frag
	}
	return s
}

// storeID reports whether id can be a store's id: 1 to 64 letters,
// digits and hyphens (a UUID).
func storeID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// HeadCoverSource returns the cover page's meta.source from the head of
// an export file (up to 64 KiB of its start): its first line (NDJSON), or
// its first entry (a Bundle); "" when it has none.
func HeadCoverSource(head []byte) string {
	head = bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	line, _, _ := bytes.Cut(head, []byte("\n"))
	if s := CoverSource(bytes.TrimSpace(line)); s != "" {
		return s
	}
	return BundleCoverSource(head)
}

// ArchiveCoverSource is HeadCoverSource of the first export file (.phr,
// .ndjson or .json, not operating-system junk) of a zip or .sphr archive,
// opened with passphrase when it is encrypted; "" when there is none or
// the archive cannot be read.
func ArchiveCoverSource(r io.ReaderAt, size int64, passphrase string) string {
	z, err := zipaes.NewReader(r, size, passphrase)
	if err != nil {
		return ""
	}
	for _, f := range z.File {
		switch strings.ToLower(path.Ext(f.Name)) {
		case ".phr", ".ndjson", ".json":
		default:
			continue
		}
		if ignored(f.Name) {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return ""
		}
		defer rc.Close()
		head, _ := bufio.NewReaderSize(rc, 64<<10).Peek(64 << 10)
		return HeadCoverSource(head)
	}
	return ""
}

// BundleCoverSource returns CoverSource of the first entry of a Bundle
// document that head (the start of the document) holds, or "" when head
// does not start a Bundle, or ends before that entry does.
func BundleCoverSource(head []byte) string {
	d := json.NewDecoder(bytes.NewReader(head))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return ""
		}
		if k != "entry" {
			var skip json.RawMessage
			if d.Decode(&skip) != nil {
				return ""
			}
			continue
		}
		if t, err := d.Token(); err != nil || t != json.Delim('[') || !d.More() {
			return ""
		}
		var e struct {
			Resource json.RawMessage `json:"resource"`
		}
		if d.Decode(&e) != nil {
			return ""
		}
		return CoverSource(e.Resource)
	}
	return ""
}

// restore walks a resource: "_data" elements with ExtFile get their data
// back from load (base64); with relative, attachments whose url load
// knows get its content as data in place of the url.
func restore(raw []byte, load func(rel string) (data string, ok bool, err error), relative bool) ([]byte, bool, error) {
	v, err := fhirjson.Parse(raw)
	if err != nil {
		return raw, false, nil // the importer reports the syntax error
	}
	changed := false
	var restoreErr error
	var visit func(obj *fhirjson.Value, root bool)
	visit = func(obj *fhirjson.Value, root bool) {
		if restoreErr != nil {
			return
		}
		switch obj.Kind {
		case fhirjson.Array:
			for _, it := range obj.Items {
				visit(it, false)
			}
			return
		case fhirjson.Object:
		default:
			return
		}
		isBinary := root && obj.GetString("resourceType") == "Binary"
		if j := indexOf(obj, "_data"); j >= 0 && (isBinary || !root) {
			if rel := fileExtension(obj.Fields[j].Value); rel != "" {
				data, ok, err := load(rel)
				if err == nil && !ok {
					err = fmt.Errorf("the archive has no file %s", rel)
				}
				if err != nil {
					restoreErr = err
					return
				}
				if removeFileExtension(obj.Fields[j].Value) {
					obj.Fields[j] = fhirjson.Field{Name: "data", Value: fhirjson.NewString(data)}
				} else {
					insertAt(obj, j, fhirjson.Field{Name: "data", Value: fhirjson.NewString(data)})
				}
				if !isBinary && obj.GetString("url") == rel {
					obj.Delete("url")
				}
				changed = true
				return
			}
		}
		if relative && !root && obj.Get("data") == nil {
			if k := indexOf(obj, "url"); k >= 0 && obj.Fields[k].Value.Kind == fhirjson.String {
				data, ok, err := load(obj.Fields[k].Value.Str)
				if err != nil {
					restoreErr = err
					return
				}
				if ok {
					obj.Fields[k] = fhirjson.Field{Name: "data", Value: fhirjson.NewString(data)}
					changed = true
					return
				}
			}
		}
		for _, f := range obj.Fields {
			if f.Value.Kind == fhirjson.Object || f.Value.Kind == fhirjson.Array {
				visit(f.Value, false)
			}
		}
	}
	visit(v, true)
	if restoreErr != nil {
		return nil, false, restoreErr
	}
	if !changed {
		return raw, false, nil
	}
	return v.Marshal(), true, nil
}

// inline reads an attachment file as base64.
func (r *Reader) inline(phrFile, rel string) (string, error) {
	rc, size, err := r.Attachment(phrFile, rel)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	if size > r.MaxInline {
		return "", fmt.Errorf("attachment %s has %d bytes, more than the %d Restore inlines; stream it with Attachment", rel, size, r.MaxInline)
	}
	var b strings.Builder
	b.Grow(base64.StdEncoding.EncodedLen(int(size)))
	enc := base64.NewEncoder(base64.StdEncoding, &b)
	if _, err := io.Copy(enc, io.LimitReader(rc, r.MaxInline+1)); err != nil {
		return "", fmt.Errorf("read %s: %w", rel, err)
	}
	enc.Close()
	return b.String(), nil
}
