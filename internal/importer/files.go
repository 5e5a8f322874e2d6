package importer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/sphr"
	"github.com/phr-project/phr/internal/zipaes"
)

// MaxAttachment caps one attachment file re-attached from a .sphr.
const MaxAttachment = 64 << 20

// typeOrder puts the resources others point at first, so that identities
// (and business-identifier matches) are known before references to them.
var typeOrder = map[string]int{"Patient": 0, "Organization": 1, "Location": 2, "Practitioner": 3, "PractitionerRole": 4, "Medication": 5, "Encounter": 6}

func typeRank(name string) int {
	base := filepath.Base(name)
	t, _, _ := strings.Cut(base, ".")
	t, _, _ = strings.Cut(t, "-")
	if r, ok := typeOrder[t]; ok {
		return r
	}
	return 100
}

// Path imports a file or a directory (a Bulk Data export: one NDJSON file
// per type, or any mix of .ndjson, .phr, .json Bundles, .sphr/.zip, .gz).
func (r *Run) Path(p, passphrase string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return r.File(f, filepath.Base(p), st.Size(), passphrase)
	}
	files, err := DirFiles(p)
	if err != nil {
		return err
	}
	for _, fp := range files {
		rel, _ := filepath.Rel(p, fp)
		f, err := os.Open(fp)
		if err != nil {
			return err
		}
		st, _ := f.Stat()
		err = r.File(f, rel, st.Size(), passphrase)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// importable reports whether a file name looks like input.
func importable(name string) bool {
	if strings.HasPrefix(name, "._") || name == ".DS_Store" {
		return false
	}
	n := strings.TrimSuffix(strings.ToLower(name), ".gz")
	for _, ext := range []string{".ndjson", ".jsonl", ".phr", ".json", ".sphr", ".zip", ".smart-health-card"} {
		if strings.HasSuffix(n, ext) {
			return true
		}
	}
	return false
}

// File imports one file by its name and content: .sphr/.zip archives
// (f must then be an io.ReaderAt), gzip, NDJSON (.ndjson, .phr) or a JSON
// document (a Bundle, a resource or a Bulk Data manifest).
func (r *Run) File(f io.Reader, name string, size int64, passphrase string) error {
	lower := strings.ToLower(name)
	if strings.HasSuffix(lower, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		return r.File(zr, strings.TrimSuffix(name, name[len(name)-3:]), -1, passphrase)
	}
	br := bufio.NewReaderSize(f, 1<<16)
	br = r.fromUTF16(br, name, 1<<16)
	head, _ := br.Peek(4)
	if bytes.Equal(head, []byte("PK\x03\x04")) || strings.HasSuffix(lower, ".sphr") || strings.HasSuffix(lower, ".zip") {
		ra, ok := f.(io.ReaderAt)
		if !ok || size < 0 {
			return r.spoolZip(br, name, passphrase)
		}
		return r.Zip(ra, size, name, passphrase)
	}
	if strings.HasSuffix(lower, ".ndjson") || strings.HasSuffix(lower, ".jsonl") {
		if skip, why := notFHIR(br); skip {
			r.report(fhir.Issue{Severity: "warning", Code: "not-supported", Diagnostics: fmt.Sprintf("%s: skipped: %s", name, why)})
			return nil
		}
		return r.NDJSON(br, name)
	}
	// .phr and .json: NDJSON when the first line is a complete JSON
	// value, else one JSON document. A SMART Health Card file on one
	// line is a document.
	if looksNDJSON(br) && !looksCardFile(br) {
		if skip, why := notFHIR(br); skip {
			r.report(fhir.Issue{Severity: "warning", Code: "not-supported", Diagnostics: fmt.Sprintf("%s: skipped: %s", name, why)})
			return nil
		}
		return r.NDJSON(br, name)
	}
	return r.document(br, name)
}

// looksNDJSON peeks at the first line. One longer than the peek (a
// Synthea Provenance naming every resource of a patient runs to 140 KB)
// is minified JSON: NDJSON, unless it starts a Bundle, which is read as
// one document (entry by entry).
func looksNDJSON(br *bufio.Reader) bool {
	buf, _ := br.Peek(1 << 16)
	full := len(buf) == 1<<16
	buf = TrimBOM(buf)
	nl := bytes.IndexByte(buf, '\n')
	if nl < 0 {
		t := bytes.TrimSpace(buf)
		bundle := bytes.HasPrefix(t, []byte(`{"resourceType":"Bundle"`))
		if full {
			return bytes.HasPrefix(t, []byte("{")) && !bundle
		}
		return json.Valid(t) && !bundle
	}
	first := bytes.TrimSpace(buf[:nl])
	return len(first) > 0 && json.Valid(first)
}

// looksCardFile reports whether the input starts as a SMART Health Card
// file does ({"verifiableCredential":[...]}; see healthCards).
func looksCardFile(br *bufio.Reader) bool {
	buf, _ := br.Peek(256)
	buf = bytes.TrimLeft(TrimBOM(buf), " \t\r\n")
	return bytes.HasPrefix(buf, []byte("{")) && bytes.HasPrefix(bytes.TrimLeft(buf[1:], " \t\r\n"), []byte(`"verifiableCredential"`))
}

// notFHIR reports NDJSON that is not FHIR (an export log).
func notFHIR(br *bufio.Reader) (bool, string) {
	buf, _ := br.Peek(1 << 16)
	first := buf
	if nl := bytes.IndexByte(buf, '\n'); nl >= 0 {
		first = buf[:nl]
	}
	if !bytes.Contains(first, []byte(`"resourceType"`)) {
		return true, "its first line has no resourceType (not FHIR NDJSON, e.g. an export log)"
	}
	return false, ""
}

// document imports a JSON document: a Bundle, a resource or a Bulk Data
// manifest.
func (r *Run) document(br *bufio.Reader, name string) error {
	return r.Bundle(br, name)
}

// spoolZip copies a streamed archive to a temporary file (zip needs random
// access) and imports it.
func (r *Run) spoolZip(rd io.Reader, name, passphrase string) error {
	tmp, n, err := spool(countingReader{rd, &r.sum.Bytes}, name)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	r.sum.Bytes -= n // counted again while reading the entries
	return r.Zip(tmp, n, name, passphrase)
}

// spool copies an archive to a temporary file, which the caller removes,
// and returns its size. An upload that cannot be read to its end is the
// client's error (400), a file that cannot be written the server's.
func spool(rd io.Reader, name string) (*os.File, int64, error) {
	tmp, err := os.CreateTemp("", "phr-import-*.zip")
	if err != nil {
		return nil, 0, fmt.Errorf("spool %s: %w", name, err)
	}
	in := &readFailure{r: rd}
	n, err := io.Copy(tmp, in)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		var fe *fhir.Error
		switch {
		case in.err == nil:
			return nil, 0, fmt.Errorf("spool %s: %w", name, err)
		case errors.As(in.err, &fe):
			return nil, 0, readError(name, in.err)
		}
		return nil, 0, fhir.Errorf(400, "incomplete", "%s: the upload could not be read to its end: %v", name, in.err)
	}
	return tmp, n, nil
}

// readFailure keeps the error its reader failed with.
type readFailure struct {
	r   io.Reader
	err error
}

func (f *readFailure) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF {
		f.err = err
	}
	return n, err
}

// Zip imports a .sphr or zip archive: every .phr, .ndjson, .json and
// .smart-health-card in it (ignoring __MACOSX/ and .DS_Store),
// re-attaching the files that attachments reference by relative URL as
// Binary resources. The other files are named in an information issue.
func (r *Run) Zip(ra io.ReaderAt, size int64, name, passphrase string) error {
	zr, err := zipaes.NewReader(ra, size, passphrase)
	if err != nil {
		return fhir.Errorf(400, "structure", "%s: %v", name, err)
	}
	files := map[string]*zipaes.File{}
	var inputs []*zipaes.File
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") || strings.HasPrefix(f.Name, "__MACOSX/") || strings.Contains(f.Name, "/__MACOSX/") || path.Base(f.Name) == ".DS_Store" || strings.HasPrefix(path.Base(f.Name), "._") {
			continue
		}
		files[f.Name] = f
		low := strings.ToLower(f.Name)
		if strings.HasSuffix(low, ".phr") || strings.HasSuffix(low, ".ndjson") || strings.HasSuffix(low, ".json") || strings.HasSuffix(low, ".jsonl") || strings.HasSuffix(low, ".smart-health-card") {
			inputs = append(inputs, f)
		}
	}
	if len(inputs) == 0 {
		return fhir.Errorf(400, "not-found", "%s holds no .phr, .ndjson, .json or .smart-health-card file", name)
	}
	used := map[string]bool{} // imported or attached
	for _, f := range inputs {
		used[f.Name] = true
	}
	sort.SliceStable(inputs, func(i, j int) bool { return typeRank(inputs[i].Name) < typeRank(inputs[j].Name) })
	for _, f := range inputs {
		rc, err := f.Open()
		if err != nil {
			if errors.Is(err, zipaes.ErrPassphraseRequired) {
				return fhir.Errorf(401, "security", "%s is encrypted: send the passphrase (X-PHR-Passphrase header, --passphrase)", name)
			}
			if errors.Is(err, zipaes.ErrWrongPassphrase) || errors.Is(err, zipaes.ErrAuthentication) {
				return fhir.Errorf(403, "security", "%s: the passphrase does not open it (%v)", name, err)
			}
			return fhir.Errorf(400, "structure", "%s: %v", name, err)
		}
		dir := path.Dir(f.Name)
		r.attach = func(u string) ([]byte, bool, error) {
			if strings.Contains(u, ":") || strings.HasPrefix(u, "/") || strings.HasPrefix(u, "#") {
				return nil, false, nil
			}
			p := path.Clean(path.Join(dir, u))
			af, ok := files[p]
			if !ok {
				return nil, false, nil
			}
			used[p] = true
			if af.Size > MaxAttachment {
				return nil, false, fmt.Errorf("attachment %s is larger than %d bytes", p, MaxAttachment)
			}
			arc, err := af.Open()
			if err != nil {
				return nil, false, err
			}
			defer arc.Close()
			b, err := io.ReadAll(io.LimitReader(arc, MaxAttachment+1))
			if err != nil {
				return nil, false, fmt.Errorf("read attachment %s: %w", p, err)
			}
			return b, true, nil
		}
		err = r.File(rc, name+"!"+f.Name, -1, passphrase)
		r.attach = nil
		rc.Close()
		if err != nil {
			return err
		}
	}
	var other []string
	for n := range files {
		if !used[n] {
			other = append(other, n)
		}
	}
	if len(other) > 0 {
		sort.Strings(other)
		more := ""
		if len(other) > 20 {
			more = fmt.Sprintf(" and %d more", len(other)-20)
			other = other[:20]
		}
		r.report(issue("information", "informational", "", "%s: not imported (neither FHIR JSON nor an attachment of it): %s%s", name, strings.Join(other, ", "), more))
	}
	return nil
}

// reattach replaces attachments that point at files of the archive
// (relative URLs) with references to Binary resources holding the bytes,
// returned as extra items placed before it.
func (r *Run) reattach(it *item) ([]*item, error) {
	if r.attach == nil {
		return nil, nil
	}
	src := it.raw
	// Content a phr .sphr export moved to files (Binary data, large
	// attachments) goes back in place, byte for byte (internal/sphr).
	restored, changed, err := sphr.RestoreJSON(src, func(rel string) ([]byte, error) {
		b, ok, err := r.attach(rel)
		if err == nil && !ok {
			err = fmt.Errorf("the archive has no file %s", rel)
		}
		return b, err
	})
	if err != nil {
		return nil, err
	}
	if changed {
		src = restored
		if it.tree, err = fhirjson.Parse(src); err != nil {
			return nil, err
		}
	}
	if !bytes.Contains(src, []byte(`"url"`)) {
		return nil, nil
	}
	v, err := fhirjson.Parse(src)
	if err != nil {
		return nil, nil
	}
	var extra []*item
	var werr error
	var walk func(x *fhirjson.Value)
	walk = func(x *fhirjson.Value) {
		switch x.Kind {
		case fhirjson.Object:
			if u := x.Get("url"); u != nil && u.Kind == fhirjson.String && (x.Get("contentType") != nil || x.Get("title") != nil) {
				data, ok, err := r.attach(u.Str)
				if err != nil {
					werr = err
					return
				}
				if ok {
					sum := sha256.Sum256(data)
					id := "att-" + hex.EncodeToString(sum[:])[:40]
					ct := x.GetString("contentType")
					if ct == "" {
						ct = "application/octet-stream"
					}
					bin := fhirjson.NewObject(
						fhirjson.Field{Name: "resourceType", Value: fhirjson.NewString("Binary")},
						fhirjson.Field{Name: "id", Value: fhirjson.NewString(id)},
						fhirjson.Field{Name: "contentType", Value: fhirjson.NewString(ct)},
						fhirjson.Field{Name: "data", Value: fhirjson.NewString(base64.StdEncoding.EncodeToString(data))},
					)
					extra = append(extra, &item{line: it.line, entry: it.entry, tree: bin, raw: []byte(fmt.Sprintf(`{"resourceType":"Binary","id":%q,"contentType":%q}`, id, ct))})
					x.Set("url", fhirjson.NewString("Binary/"+id))
					if x.Get("size") == nil {
						x.SetAfter("size", fhirjson.NewNumber(fmt.Sprint(len(data))), "url")
					}
				}
			}
			for _, f := range x.Fields {
				walk(f.Value)
			}
		case fhirjson.Array:
			for _, y := range x.Items {
				walk(y)
			}
		}
	}
	walk(v)
	if werr != nil {
		return nil, werr
	}
	if len(extra) > 0 {
		it.tree = v
	}
	return extra, nil
}

// DirFiles lists the importable files under dir in load order: the
// resources others point at (Patient, Organization, Location,
// Practitioner...) first, skipping __MACOSX/ and .DS_Store.
func DirFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(fp string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "__MACOSX" {
				return filepath.SkipDir
			}
			return nil
		}
		if importable(d.Name()) {
			files = append(files, fp)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	SortForLoad(files)
	return files, nil
}

// SortForLoad orders files named after their resource type (Type.ndjson,
// Type.000.ndjson, Type-1.ndjson) so that the resources others point at
// come first.
func SortForLoad(files []string) {
	sort.SliceStable(files, func(i, j int) bool {
		ri, rj := typeRank(files[i]), typeRank(files[j])
		if ri != rj {
			return ri < rj
		}
		return files[i] < files[j]
	})
}
