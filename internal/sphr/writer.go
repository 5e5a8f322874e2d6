package sphr

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/zipaes"
)

// Writer writes a .sphr archive as a stream. Attachment files go straight
// into the archive as they come; the .phr lines are spooled to a temporary
// file (ZIP entries cannot interleave) and added as the last entry by Close,
// so memory stays bounded by the largest single resource.
type Writer struct {
	zw    *zipaes.Writer
	name  string
	spool *os.File
	buf   *bufio.Writer
	used  map[string]bool
	err   error
	// InlineLimit is the base64 length of Attachment.data above which the
	// content becomes a file (DefaultInlineLimit when 0).
	InlineLimit int
	// Lines counts the lines written to the .phr; Files the attachment files.
	Lines int64
	Files int
}

// NewWriter starts an archive on w whose entries live under name/ (name is
// made safe with SafeName). An empty passphrase writes a plain zip. The
// spool file is created in tmpDir (os.TempDir() when empty).
func NewWriter(w io.Writer, name, passphrase, tmpDir string) (*Writer, error) {
	f, err := os.CreateTemp(tmpDir, "phr-export-*.phr")
	if err != nil {
		return nil, fmt.Errorf("sphr: create spool file: %w", err)
	}
	// The spool holds health data: it is removed as soon as possible and
	// readable by the owner only (CreateTemp makes it 0600).
	return &Writer{
		zw:    zipaes.NewWriter(w, passphrase),
		name:  SafeName(name, "phr-export"),
		spool: f,
		buf:   bufio.NewWriterSize(f, 256<<10),
		used:  map[string]bool{},
	}, nil
}

// SetLevel sets the DEFLATE level of the archive's entries (see
// zipaes.Writer.SetLevel); call it before writing anything.
func (w *Writer) SetLevel(level int) error { return w.zw.SetLevel(level) }

// Name is the archive's base name: the .phr is Name()/Name().phr.
func (w *Writer) Name() string { return w.name }

func (w *Writer) inlineLimit() int {
	if w.InlineLimit > 0 {
		return w.InlineLimit
	}
	return DefaultInlineLimit
}

// WriteLine adds one line (a complete JSON object, such as an
// OperationOutcome) to the .phr as it is.
func (w *Writer) WriteLine(raw []byte) error {
	if w.err != nil {
		return w.err
	}
	w.buf.Write(raw)
	if err := w.buf.WriteByte('\n'); err != nil {
		w.err = fmt.Errorf("sphr: spool: %w", err)
		return w.err
	}
	w.Lines++
	return nil
}

var dataKey = []byte(`"data":"`)

// WriteResource adds one resource (compact JSON). A Binary's data and
// Attachment data longer than InlineLimit are moved to files.
func (w *Writer) WriteResource(raw []byte) error {
	if w.err != nil {
		return w.err
	}
	if !bytes.Contains(raw, dataKey) {
		return w.WriteLine(raw)
	}
	v, err := fhirjson.Parse(raw)
	if err != nil || v.Kind != fhirjson.Object {
		return w.WriteLine(raw)
	}
	typ, id := v.GetString("resourceType"), v.GetString("id")
	changed := false
	n := 0
	if typ == "Binary" {
		if ok, err := w.externalize(v, w.fileName("Binary-"+id, v.GetString("contentType")), 0); err != nil {
			return err
		} else if ok {
			changed = true
		}
	} else {
		var walkErr error
		walk(v, true, func(att *fhirjson.Value) {
			if walkErr != nil {
				return
			}
			n++
			name := w.fileName(typ+"-"+id+"-"+strconv.Itoa(n), att.GetString("contentType"))
			ok, err := w.externalize(att, name, w.inlineLimit())
			if err != nil {
				walkErr = err
			}
			if ok {
				changed = true
				if indexOf(att, "url") < 0 {
					insertAt(att, indexOf(att, "_data")+1, fhirjson.Field{Name: "url", Value: fhirjson.NewString("./" + name)})
				}
			}
		})
		if walkErr != nil {
			return walkErr
		}
	}
	if !changed {
		return w.WriteLine(raw)
	}
	return w.WriteLine(v.Marshal())
}

// walk calls fn on every object below the root that has string members
// data and contentType (the shape of an Attachment with content; att-1
// requires contentType when there is data).
func walk(v *fhirjson.Value, root bool, fn func(*fhirjson.Value)) {
	switch v.Kind {
	case fhirjson.Object:
		if !root {
			if d := v.Get("data"); d != nil && d.Kind == fhirjson.String {
				if ct := v.Get("contentType"); ct != nil && ct.Kind == fhirjson.String {
					fn(v)
					return
				}
			}
		}
		for _, f := range v.Fields {
			if f.Value.Kind == fhirjson.Object || f.Value.Kind == fhirjson.Array {
				walk(f.Value, false, fn)
			}
		}
	case fhirjson.Array:
		for _, it := range v.Items {
			walk(it, false, fn)
		}
	}
}

// externalize moves the base64 data of obj to the file name when it is
// longer than limit: data is replaced in place by "_data" with ExtFile.
func (w *Writer) externalize(obj *fhirjson.Value, name string, limit int) (bool, error) {
	i := indexOf(obj, "data")
	if i < 0 || obj.Fields[i].Value.Kind != fhirjson.String || len(obj.Fields[i].Value.Str) <= limit {
		return false, nil
	}
	raw, err := base64.StdEncoding.DecodeString(stripSpace(obj.Fields[i].Value.Str))
	if err != nil {
		return false, nil // not valid base64: left inline as it is
	}
	if err := w.addFile(name, obj.GetString("contentType"), bytes.NewReader(raw)); err != nil {
		return false, err
	}
	rel := "./" + name
	if j := indexOf(obj, "_data"); j >= 0 && obj.Fields[j].Value.Kind == fhirjson.Object {
		ext := obj.Fields[j].Value
		exts := ext.Get("extension")
		if exts == nil || exts.Kind != fhirjson.Array {
			exts = fhirjson.NewArray()
			ext.Set("extension", exts)
		}
		exts.Items = append(exts.Items, fileRef(rel).Get("extension").Items[0])
		obj.Fields = append(obj.Fields[:i], obj.Fields[i+1:]...)
	} else {
		obj.Fields[i] = fhirjson.Field{Name: "_data", Value: fileRef(rel)}
	}
	return true, nil
}

// WriteBinary adds a Binary whose JSON raw has no data and whose content is
// read from content (streamed into the archive, never held in memory).
func (w *Writer) WriteBinary(raw []byte, id, contentType string, content io.Reader) error {
	if w.err != nil {
		return w.err
	}
	body := bytes.TrimRight(raw, " \r\n\t")
	if len(body) < 2 || body[len(body)-1] != '}' || bytes.Contains(body, dataKey) {
		return fmt.Errorf("sphr: Binary/%s: expected the resource JSON without data", id)
	}
	name := w.fileName("Binary-"+id, contentType)
	if err := w.addFile(name, contentType, content); err != nil {
		return err
	}
	line := make([]byte, 0, len(body)+len(ExtFile)+len(name)+64)
	line = append(line, body[:len(body)-1]...)
	if !bytes.Equal(bytes.TrimSpace(body[:len(body)-1]), []byte("{")) {
		line = append(line, ',')
	}
	line = append(line, `"_data":`...)
	line = fileRef("./" + name).Append(line)
	line = append(line, '}')
	return w.WriteLine(line)
}

// fileName picks an unused file name for base with the extension of the
// content type.
func (w *Writer) fileName(base, contentType string) string {
	base = SafeName(base, "attachment")
	ext := extensionForType(contentType)
	name := base + ext
	for i := 2; w.used[name] || name == w.name+".phr"; i++ {
		name = base + "-" + strconv.Itoa(i) + ext
	}
	w.used[name] = true
	return name
}

func storedType(ct string) bool {
	switch extensionForType(ct) {
	case ".jpg", ".png", ".gif", ".pdf", ".mp3", ".mp4":
		return true
	}
	return false
}

func (w *Writer) addFile(name, contentType string, r io.Reader) error {
	method := zipaes.Deflate
	if storedType(contentType) {
		method = zipaes.Store // already compressed: deflating costs time for nothing
	}
	fw, err := w.zw.CreateHeader(&zipaes.FileHeader{Name: w.name + "/" + name, Method: method})
	if err != nil {
		w.err = fmt.Errorf("sphr: add %s: %w", name, err)
		return w.err
	}
	if _, err := io.Copy(fw, r); err != nil {
		w.err = fmt.Errorf("sphr: write %s: %w", name, err)
		return w.err
	}
	w.Files++
	return nil
}

// Close adds the .phr entry, finishes the archive and removes the spool
// file. It does not close the underlying writer.
func (w *Writer) Close() error {
	defer w.Abort()
	if w.err != nil {
		return w.err
	}
	if err := w.buf.Flush(); err != nil {
		return fmt.Errorf("sphr: spool: %w", err)
	}
	if _, err := w.spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("sphr: spool: %w", err)
	}
	fw, err := w.zw.Create(w.name + "/" + w.name + ".phr")
	if err != nil {
		return fmt.Errorf("sphr: add %s.phr: %w", w.name, err)
	}
	if _, err := io.Copy(fw, w.spool); err != nil {
		return fmt.Errorf("sphr: write %s.phr: %w", w.name, err)
	}
	if err := w.zw.Close(); err != nil {
		return fmt.Errorf("sphr: finish archive: %w", err)
	}
	w.err = errors.New("sphr: writer closed")
	return nil
}

// Abort removes the spool file without finishing the archive (Close calls
// it too; calling it twice is harmless).
func (w *Writer) Abort() {
	if w.spool != nil {
		w.spool.Close()
		os.Remove(w.spool.Name())
		w.spool = nil
	}
	if w.err == nil {
		w.err = errors.New("sphr: writer aborted")
	}
}

func stripSpace(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}
