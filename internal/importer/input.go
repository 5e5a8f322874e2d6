package importer

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/shc"
	"github.com/phr-project/phr/internal/sphr"
)

// MaxLine caps one NDJSON line (one resource).
const MaxLine = 64 << 20

// MaxBundle caps a JSON document read whole: one that is not a Bundle
// starting with its resourceType, which is streamed entry by entry.
const MaxBundle = 512 << 20

// countingReader counts the bytes read.
type countingReader struct {
	r io.Reader
	n *int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// NDJSON imports one resource per line from rd. Blank lines are skipped;
// a line that is a Bundle is imported entry by entry.
func (r *Run) NDJSON(rd io.Reader, name string) (err error) {
	defer r.settleInto(&err)
	r.fileName = name
	br := bufio.NewReaderSize(countingReader{rd, &r.sum.Bytes}, 1<<20)
	br = r.fromUTF16(br, name, 1<<20)
	ch := &chunk{}
	keys := map[string]bool{}
	size := 0 // bytes of input in ch
	flush := func() error {
		if len(ch.items) == 0 {
			return nil
		}
		err := r.process(ch)
		ch = &chunk{}
		clear(keys)
		size = 0
		return err
	}
	line := 0
	for {
		raw, err := readLine(br)
		if len(raw) > 0 || err == nil {
			line++
		}
		if errors.Is(err, errLineTooLong) {
			ch.items = append(ch.items, &item{line: line, raw: raw, act: actReject, issues: []fhir.Issue{issue("error", "too-costly", "", "the line is longer than %d bytes; its first %d bytes are kept", MaxLine, len(raw))}})
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if ferr := flush(); ferr != nil {
				return ferr
			}
			return readError(fmt.Sprintf("%s line %d", name, line), err)
		}
		if t := bytes.TrimSpace(TrimBOM(raw)); len(t) > 0 && !r.coverPage(t, line) {
			it := &item{line: line, raw: t}
			if k := quickKey(t); k != "" {
				if keys[k] {
					// The same resource twice in one chunk: write the
					// first before merging the second.
					if err := flush(); err != nil {
						return err
					}
				}
				keys[k] = true
			}
			if t[0] == '[' || bytes.Contains(t[:min(len(t), 64)], []byte(`"Bundle"`)) {
				if err := flush(); err != nil {
					return err
				}
				if err := r.bundleLine(it); err != nil {
					return err
				}
			} else {
				extra, err := r.reattach(it)
				if err != nil {
					it.reject(issue("error", "exception", "", "%v", err))
				}
				ch.items = append(ch.items, extra...)
				ch.items = append(ch.items, it)
				for _, x := range extra {
					size += len(x.raw)
				}
				size += len(it.raw)
				if r.imp.chunkFull(len(ch.items), size) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err != nil {
			break
		}
	}
	return flush()
}

// coverPage reports whether raw is the Composition cover page a phr export
// writes (tagged sphr.CoverTagSystem). It is not imported: it describes one
// export file, not the record, and every export writes a new one (with a
// new id), so storing it would add a stray Composition per import. The
// caller is told with an information issue.
func (r *Run) coverPage(raw []byte, line int) bool {
	if !sphr.IsCoverPage(raw) {
		return false
	}
	id := fieldValue(raw, `"id":"`)
	r.report(fhir.Issue{Severity: "information", Code: "informational", Diagnostics: fmt.Sprintf("%s line %d: Composition/%s is the cover page of a phr export; it is not stored (every export writes its own)", r.fileName, line, id)})
	return true
}

// bundleLine imports an NDJSON line holding a Bundle entry by entry.
func (r *Run) bundleLine(it *item) error {
	v, err := fhirjson.Parse(it.raw)
	if err == nil && v.Kind == fhirjson.Array {
		w := arrayWarning
		w.Diagnostics = fmt.Sprintf("%s line %d: %s", r.fileName, it.line, w.Diagnostics)
		r.report(w)
		v = arrayAsBundle(v)
	}
	if err != nil || v.Kind != fhirjson.Object || v.GetString("resourceType") != "Bundle" {
		return r.process(&chunk{items: []*item{it}})
	}
	return r.bundleTree(v, it.raw, it.line)
}

// notJSON says what a file that is not JSON holds when it is something
// people are given instead of FHIR JSON, and how to import it; empty
// otherwise.
func notJSON(t []byte) string {
	switch {
	case len(t) > 0 && t[0] == '<':
		return "the file looks like XML; FHIR XML is not read, convert it to FHIR JSON first"
	case bytes.Contains(t[:min(len(t), 8<<10)], []byte("shlink:/")):
		return "the file holds a SMART Health Link; open it with phr shl fetch 'shlink:/...' (it fetches and decrypts what the link shares), then import what that saves"
	case isJWE(t):
		return "the file is encrypted (a JWE, as a SMART Health Link shares its files); it needs the link's key: open the link with phr shl fetch 'shlink:/...', then import what that saves"
	}
	return ""
}

// isJWE reports whether t is a JWE in compact form: five base64url parts
// whose header names a content encryption ("enc").
func isJWE(t []byte) bool {
	parts := bytes.Split(t, []byte("."))
	if len(parts) != 5 {
		return false
	}
	head, err := base64.RawURLEncoding.DecodeString(string(parts[0]))
	if err != nil {
		return false
	}
	var h struct {
		Enc string `json:"enc"`
	}
	return json.Unmarshal(head, &h) == nil && h.Enc != ""
}

// arrayWarning reports a JSON array of resources or entries (see
// arrayAsBundle).
var arrayWarning = issue("warning", "structure", "", "a JSON array, not a Bundle; its elements (resources, or Bundle entries) are imported as the entries of a collection Bundle (Bundle.entry[i] below is the element's index)")

// arrayAsBundle makes a collection Bundle of the elements of a JSON
// array. An array of resources is not FHIR, but some tools write one;
// others write a Bundle's entry array alone (objects with a resource and
// its fullUrl, which the other entries' references name), and those
// elements are the entries as they are.
func arrayAsBundle(v *fhirjson.Value) *fhirjson.Value {
	entries := fhirjson.NewArray()
	for _, el := range v.Items {
		if el.Kind == fhirjson.Object && el.Get("resourceType") == nil {
			if res := el.Get("resource"); res != nil && res.Kind == fhirjson.Object {
				entries.Items = append(entries.Items, el)
				continue
			}
		}
		entries.Items = append(entries.Items, fhirjson.NewObject(fhirjson.Field{Name: "resource", Value: el}))
	}
	return fhirjson.NewObject(
		fhirjson.Field{Name: "resourceType", Value: fhirjson.NewString("Bundle")},
		fhirjson.Field{Name: "type", Value: fhirjson.NewString("collection")},
		fhirjson.Field{Name: "entry", Value: entries})
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line (without its end) of at most MaxLine bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		part, err := br.ReadSlice('\n')
		if len(buf)+len(part) > MaxLine {
			keep := append(buf, part[:min(len(part), 1<<20)]...)
			// Skip to the end of the line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			return keep, errLineTooLong
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			buf = append(buf, part...)
			continue
		}
		if buf == nil {
			buf = make([]byte, len(part))
			copy(buf, part)
		} else {
			buf = append(buf, part...)
		}
		buf = bytes.TrimRight(buf, "\r\n")
		return buf, err
	}
}

// quickKey finds "resourceType" and "id" near the start of a line cheaply
// (for spotting duplicates within a chunk); "" when unsure.
func quickKey(line []byte) string {
	head := line[:min(len(line), 256)]
	t := fieldValue(head, `"resourceType":"`)
	id := fieldValue(head, `"id":"`)
	if t == "" || id == "" {
		return ""
	}
	return t + "/" + id
}

func fieldValue(b []byte, prefix string) string {
	i := bytes.Index(b, []byte(prefix))
	if i < 0 {
		return ""
	}
	rest := b[i+len(prefix):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// Bundle imports a FHIR Bundle (document, collection, transaction, batch,
// searchset, message, history) or a single resource from rd. A Bundle
// whose first member is its resourceType is read as a stream, entry by
// entry, in chunks: memory does not grow with its size. Other documents
// are read whole (up to MaxBundle). A history Bundle's entries are
// imported oldest first (see historySpool) when its type comes before its
// entries, as servers write it, or, when it comes after them, when the
// first entry has a request and a response, as only history entries do.
func (r *Run) Bundle(rd io.Reader, name string) (err error) {
	defer r.settleInto(&err)
	r.fileName = name
	br := bufio.NewReaderSize(countingReader{rd, &r.sum.Bytes}, 1<<16)
	br = r.fromUTF16(br, name, 1<<16)
	if head, _ := br.Peek(len(utf8BOM)); bytes.Equal(head, utf8BOM) {
		br.Discard(len(utf8BOM))
	}
	if streamsAsBundle(br) {
		return r.streamBundle(br)
	}
	data, err := io.ReadAll(io.LimitReader(br, MaxBundle+1))
	if err != nil {
		return readError(name, err)
	}
	if len(data) > MaxBundle {
		return fhir.Errorf(413, "too-costly", "%s: a JSON document larger than %d bytes that is not a Bundle starting with its resourceType cannot be imported; send NDJSON", name, MaxBundle)
	}
	if cards, ok, err := shc.Find(data); ok {
		return r.healthCards(cards, err, data)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		r.report(issue("warning", "incomplete", "", "%s: the file is empty; nothing to import", name))
		return nil
	}
	v, err := fhirjson.Parse(data)
	if err != nil {
		it := &item{line: 1, raw: data}
		var se *fhirjson.SyntaxError
		if what := notJSON(bytes.TrimSpace(data)); what != "" {
			it.reject(issue("error", "not-supported", "", "not JSON: %s", what))
		} else if errors.As(err, &se) {
			l, c := fhirjson.Position(data, se.Offset)
			it.line = l
			it.reject(issue("error", "structure", "", "not valid JSON: %s (line %d, column %d)", se.Msg, l, c))
		} else {
			it.reject(issue("error", "structure", "", "not valid JSON: %v", err))
		}
		return r.process(&chunk{items: []*item{it}})
	}
	var warn []fhir.Issue
	if v.Kind == fhirjson.String && strings.HasPrefix(strings.TrimSpace(v.Str), "{") {
		inner, err := fhirjson.Parse([]byte(v.Str))
		if err == nil {
			warn = append(warn, issue("warning", "structure", "", "the file is a JSON string holding JSON (encoded twice); decoded it"))
			data = []byte(v.Str)
			v = inner
		}
	}
	if v.Kind == fhirjson.Array {
		warn = append(warn, arrayWarning)
		v = arrayAsBundle(v)
	}
	for _, w := range warn {
		w.Diagnostics = name + " line 1: " + w.Diagnostics
		r.report(w)
	}
	if b := payloadBundle(v); b != nil {
		return r.cardPayload(v, b)
	}
	if v.Kind != fhirjson.Object || v.GetString("resourceType") != "Bundle" {
		return r.process(&chunk{items: []*item{{line: 1, raw: data, tree: v}}})
	}
	return r.bundleTree(v, data, 1)
}

// streamBundle imports a Bundle from br entry by entry.
func (r *Run) streamBundle(br *bufio.Reader) error {
	sc := &scanner{br: br, line: 1, name: r.fileName}
	bs := r.newBundleStream()
	defer bs.close()
	fail := func(err error) error {
		syntax := isSyntax(err)
		if syntax || sc.rerr != nil {
			// What was read before stays imported (as NDJSON's lines
			// do when the input breaks off: see scanner.rerr).
			if ferr := bs.finish(); ferr != nil {
				return ferr
			}
		}
		if !syntax {
			return err
		}
		// The rest is reported.
		line, msg := sc.line, err.Error()
		var se *errSyntax
		var tl *errTooLarge
		switch {
		case errors.As(err, &se):
			line, msg = se.line, se.msg
		case errors.As(err, &tl):
			line, msg = tl.line, fmt.Sprintf("a value longer than %d bytes", tl.max)
		}
		it := &item{line: line, raw: []byte{}}
		it.reject(issue("error", "structure", "", "not valid JSON, the rest of the Bundle is not imported: %s", msg))
		return r.process(&chunk{items: []*item{it}})
	}
	if err := sc.expect('{'); err != nil {
		return fail(err)
	}
	sawEntry := false
	for more := true; more; {
		if c, err := sc.peek(); err == nil && c == '}' {
			sc.br.ReadByte()
			break
		}
		k, err := sc.key()
		if err != nil {
			return fail(err)
		}
		if k != "entry" || sawEntry {
			v, _, err := sc.value(MaxLine)
			if err != nil {
				return fail(err)
			}
			switch {
			case k != "type":
			case !sawEntry:
				bs.typeFirst = true
				if string(v) == `"history"` {
					bs.history = newHistorySpool()
				}
			case string(v) == `"history"` && bs.history == nil:
				r.report(fhir.Issue{Severity: "warning", Code: "structure", Diagnostics: fmt.Sprintf("%s line 1: Bundle.type history comes after the entries, and its first entry lacks the request and response that history entries have; the entries were imported in their order, not oldest first", r.fileName)})
			case string(v) != `"history"` && bs.history != nil:
				r.report(fhir.Issue{Severity: "warning", Code: "structure", Diagnostics: fmt.Sprintf("%s line 1: the entries have a request and a response, as only a history Bundle's do, though Bundle.type, after them, is %s; they were imported as versions, oldest first", r.fileName, v)})
			}
		} else {
			sawEntry = true
			if err := r.streamEntries(sc, bs); err != nil {
				return fail(err)
			}
		}
		if more, err = sc.next('}'); err != nil {
			return fail(err)
		}
	}
	if !sawEntry {
		r.report(fhir.Issue{Severity: "warning", Code: "required", Diagnostics: fmt.Sprintf("%s line 1: the Bundle has no entries", r.fileName)})
	}
	return bs.finish()
}

// streamEntries reads the entry array, handing each entry to bs.
func (r *Run) streamEntries(sc *scanner, bs *bundleStream) error {
	if c, err := sc.peek(); err != nil || c != '[' {
		raw, line, err := sc.value(MaxLine)
		if err != nil {
			return err
		}
		it := &item{line: line, raw: bytes.Clone(raw)}
		it.reject(issue("error", "structure", "Bundle.entry", "Bundle.entry is not an array"))
		return bs.add(it)
	}
	sc.br.ReadByte()
	if c, err := sc.peek(); err == nil && c == ']' {
		sc.br.ReadByte()
		return nil
	}
	for i := 0; ; i++ {
		raw, line, err := sc.value(MaxLine)
		var tl *errTooLarge
		if errors.As(err, &tl) {
			return err
		}
		if err != nil {
			return err
		}
		e, perr := fhirjson.Parse(raw)
		if perr != nil {
			it := &item{line: line, entry: i + 1, raw: bytes.Clone(raw)}
			msg := perr.Error()
			var se *fhirjson.SyntaxError
			if errors.As(perr, &se) {
				l, c := fhirjson.Position(raw, se.Offset)
				it.line = line + l - 1
				msg = fmt.Sprintf("%s (line %d, column %d)", se.Msg, line+l-1, c)
			}
			it.reject(issue("error", "structure", fmt.Sprintf("Bundle.entry[%d]", i), "not valid JSON: %s", msg))
			if err := bs.add(it); err != nil {
				return err
			}
		} else {
			lineOf := func(v *fhirjson.Value) int {
				if v == nil || v.Offset == 0 || v.Offset > len(raw) {
					return line
				}
				l, _ := fhirjson.Position(raw, v.Offset)
				return line + l - 1
			}
			if err := bs.entry(e, i, lineOf); err != nil {
				return err
			}
		}
		more, err := sc.next(']')
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// bundleTree imports the entries of a parsed Bundle. data is the text it
// was parsed from (for line numbers); line is the line the Bundle starts on.
func (r *Run) bundleTree(b *fhirjson.Value, data []byte, line int) error {
	entries := b.Get("entry")
	if entries == nil || entries.Kind != fhirjson.Array {
		r.report(fhir.Issue{Severity: "warning", Code: "required", Diagnostics: fmt.Sprintf("%s line %d: the Bundle has no entries", r.fileName, line)})
		return nil
	}
	lineOf := func(v *fhirjson.Value) int {
		if v == nil || v.Offset == 0 || v.Offset > len(data) {
			return line
		}
		l, _ := fhirjson.Position(data, v.Offset)
		return line + l - 1
	}
	bs := r.newBundleStream()
	defer bs.close()
	bs.typeFirst = true // (read whole: the type is known)
	if b.GetString("type") == "history" {
		bs.history = newHistorySpool()
	}
	for i, e := range entries.Items {
		if err := bs.entry(e, i, lineOf); err != nil {
			return err
		}
		entries.Items[i] = nil // written: let it go
	}
	return bs.finish()
}

// bundleStream takes the entries of one Bundle and imports them in
// chunks. Identities are resolved chunk by chunk and kept in the fullUrl
// map of the whole Bundle; an entry whose references point at a later
// entry waits in the Bundle's scope until the Bundle ends.
type bundleStream struct {
	r     *Run
	items []*item
	size  int // bytes of input in items
	// urls maps fullUrl to local "Type/id" for the whole Bundle, and
	// targets to the source's "Type/id" (see nameByTargets).
	urls, targets map[string]string
	// keys are the "Type/id" of entries seen, to refuse repeats.
	keys  map[string]bool
	scope *deferScope
	prev  *deferScope
	done  bool
	// history holds the entries of a history Bundle until its end (see
	// historySpool); pending are the "Type/id" of the entries queued in
	// items as they are read back.
	history *historySpool
	pending map[string]bool
	// typeFirst says Bundle.type was known before the entries (it came
	// first, or the Bundle was read whole); when it was not, the first
	// entry tells a history Bundle (entryOfHistory).
	typeFirst bool
}

func (r *Run) newBundleStream() *bundleStream {
	bs := &bundleStream{r: r, urls: map[string]string{}, targets: map[string]string{}, keys: map[string]bool{}, scope: newScope(), prev: r.scope}
	r.scope = bs.scope
	return bs
}

// entryOfHistory reports whether a Bundle entry has both a request and a
// response, which only a history Bundle's entries have (bdl-3, bdl-4).
func entryOfHistory(e *fhirjson.Value) bool {
	return e.Get("request") != nil && e.Get("response") != nil
}

// entry turns Bundle.entry[i] into an item.
func (bs *bundleStream) entry(e *fhirjson.Value, i int, lineOf func(*fhirjson.Value) int) error {
	if i == 0 && !bs.typeFirst && bs.history == nil && entryOfHistory(e) {
		// Bundle.type comes after the entries (or not at all), and the
		// first is a version: read them as a history Bundle's.
		bs.history = newHistorySpool()
	}
	l := lineOf(e)
	if e.Kind != fhirjson.Object {
		return bs.take(&item{line: l, entry: i + 1, raw: e.Marshal(), act: actReject, issues: []fhir.Issue{issue("error", "structure", fmt.Sprintf("Bundle.entry[%d]", i), "the entry is not an object")}}, "")
	}
	if s := e.Get("search"); s != nil && s.GetString("mode") == "outcome" {
		return nil
	}
	res := e.Get("resource")
	req := e.Get("request")
	it := &item{line: lineOf(res), entry: i + 1, fullURL: e.GetString("fullUrl")}
	if req != nil && strings.EqualFold(req.GetString("method"), "DELETE") {
		u := req.GetString("url")
		typ, id, ok := strings.Cut(strings.Trim(u, "/"), "/")
		if !ok || strings.Contains(id, "/") || !fhir.ValidID(id) {
			it.raw = e.Marshal()
			it.reject(issue("error", "not-supported", fmt.Sprintf("Bundle.entry[%d].request.url", i), "a DELETE entry must name Type/id, not %q", u))
		} else {
			it.del, it.typ, it.sid = true, typ, id
			// A history Bundle says when the source deleted it (and
			// which version the deletion was): a deletion older than
			// the version already taken from the source is not applied
			// again (decideDelete).
			if resp := e.Get("response"); resp != nil {
				it.srcUpd = resp.GetString("lastModified")
				it.srcVer = etagVersion(resp.GetString("etag"))
			}
		}
		return bs.take(it, typ+"/"+id)
	}
	if res == nil {
		return nil
	}
	it.tree = res
	it.raw = res.Marshal()
	if bs.r.coverPage(it.raw, it.line) {
		return nil
	}
	if bs.history != nil {
		// Versions of one resource are expected; each goes after the
		// one before it (see historySpool).
		it.tree = nil
		key := ""
		if res.GetString("id") != "" {
			key = res.GetString("resourceType") + "/" + res.GetString("id")
		}
		return bs.take(it, key)
	}
	if k := res.GetString("resourceType") + "/" + res.GetString("id"); res.GetString("id") != "" {
		if bs.keys[k] {
			it.reject(issue("error", "duplicate", fmt.Sprintf("Bundle.entry[%d]", i), "%s appears twice in the Bundle; the first is imported", k))
		}
		bs.keys[k] = true
	}
	if req != nil && req.GetString("ifNoneExist") != "" && res.Get("identifier") == nil {
		it.issues = append(it.issues, issue("information", "informational", fmt.Sprintf("Bundle.entry[%d].request.ifNoneExist", i), "ifNoneExist is applied as identifier matching, and this resource has no identifier"))
	}
	return bs.add(it)
}

// etagVersion is the version of a weak ETag (W/"3" is 3).
func etagVersion(etag string) string {
	v := strings.Trim(strings.TrimPrefix(etag, "W/"), `"`)
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return ""
	}
	return v
}

// take queues an entry's item (key: its "Type/id", when known), or keeps
// it until the end of a history Bundle.
func (bs *bundleStream) take(it *item, key string) error {
	if bs.history != nil {
		return bs.history.add(it, key)
	}
	return bs.add(it)
}

// add queues an item, processing a chunk when enough are queued.
func (bs *bundleStream) add(it *item) error {
	bs.items = append(bs.items, it)
	bs.size += len(it.raw)
	if bs.r.imp.chunkFull(len(bs.items), bs.size) {
		return bs.flush()
	}
	return nil
}

// flush processes the queued entries: parse, resolve identities (which
// also names them in the fullUrl map), merge and write.
func (bs *bundleStream) flush() error {
	if len(bs.items) == 0 {
		return nil
	}
	r := bs.r
	ch := &chunk{items: bs.items, bundle: bs.urls}
	bs.items, bs.size = nil, 0
	clear(bs.pending)
	r.parallel(ch.items, parseItem)
	for _, it := range ch.items {
		if it.tree == nil && it.act != actReject && !it.del {
			it.act = actReject
		}
	}
	bs.nameByTargets(ch.items)
	if err := r.resolveIdentities(r.ctx, ch.items, ch); err != nil {
		return err
	}
	for _, it := range ch.items {
		if it.fullURL != "" && it.localID != "" && it.typ != "" {
			bs.urls[it.fullURL] = it.typ + "/" + it.localID
		}
	}
	return r.processResolved(ch)
}

// nameByTargets names again, by their content with the entries they
// point at in its place, the resources without an id whose references
// name earlier entries of the Bundle. Such a reference ("resource:0" in a
// health card, a urn:uuid: reused from one Bundle to the next) means
// another resource in each Bundle: two cards of one pharmacy, for two
// people vaccinated on the same day, hold the same Immunization text, and
// named by the text alone the second would be taken for the first, read
// again, and not stored. Two cards of one person still name the same
// immunization alike (its Patient is the same text in both), so it is
// found again instead of copied.
func (bs *bundleStream) nameByTargets(items []*item) {
	for _, it := range items {
		if it.act == actReject || it.tree == nil || it.typ == "" {
			continue
		}
		if it.named {
			// Hashed with the targets in place of the references.
			replaced := false
			withRefs(it.tree, func(ref string) string {
				if k, ok := bs.targets[ref]; ok {
					replaced = true
					return k
				}
				return ref
			}, func() {
				if replaced {
					it.hash = contentHash(it.tree)
					it.nameByHash()
				}
			})
		}
		if it.fullURL != "" && it.sid != "" {
			bs.targets[it.fullURL] = it.typ + "/" + it.sid
		}
	}
}

// finish processes what is queued, then what waited for the end of the
// Bundle.
func (bs *bundleStream) finish() error {
	if bs.done {
		return nil
	}
	bs.done = true
	if h := bs.history; h != nil {
		bs.pending = map[string]bool{}
		err := h.readBack(func(it *item, key string) error {
			if key != "" && bs.pending[key] {
				// The version before it is in this chunk: write that
				// first.
				if err := bs.flush(); err != nil {
					return err
				}
			}
			if key != "" {
				bs.pending[key] = true
			}
			return bs.add(it)
		})
		h.close()
		if err != nil {
			return err
		}
	}
	if err := bs.flush(); err != nil {
		return err
	}
	bs.r.scope = bs.prev
	return bs.r.replay(bs.scope, bs.urls)
}

// close removes the Bundle's deferred items (and a history Bundle's
// entries) and restores the run's scope.
func (bs *bundleStream) close() {
	bs.r.scope = bs.prev
	bs.scope.close()
	if bs.history != nil {
		bs.history.close()
	}
}

// processResolved runs the rest of the merge for a chunk whose identities
// are resolved.
func (r *Run) processResolved(ch *chunk) error {
	ctx := r.ctx
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.prefetchRefs(ctx, ch.items, ch); err != nil {
		return err
	}
	if err := r.deferForward(ctx, ch); err != nil {
		return err
	}
	for ch != nil {
		tail := ch.splitShared()
		if err := r.rewriteAll(ctx, ch); err != nil {
			return err
		}
		items := ch.items
		if err := r.loadCurrent(ctx, items); err != nil {
			return err
		}
		r.decide(items)
		at := r.nextAt()
		r.parallel(items, func(it *item) { r.prepareItem(it, at) })
		r.checkAccess(ctx, items)
		if err := r.write(ctx, ch); err != nil {
			return err
		}
		ch = tail
	}
	return nil
}

// splitShared ends the chunk before its first item whose local resource
// an earlier item of the chunk has too, and returns the rest as a chunk of
// its own (nil when there is none), to be merged once the first part is
// written: each is merged against the version the one before it wrote,
// as if they had come in separate chunks. Items of one chunk have
// different source ids, but two can still resolve to one resource: one
// through the identity map, the other by business identifier (the R4
// examples' ConceptMaps 101 and 103 carry one identifier), or two by the
// same business identifier.
func (ch *chunk) splitShared() *chunk {
	seen := make(map[string]bool, len(ch.items))
	for i, it := range ch.items {
		if it.act == actReject || it.act == actSkip || it.localID == "" || it.typ == "" {
			continue
		}
		k := it.typ + "/" + it.localID
		if seen[k] {
			tail := &chunk{items: slices.Clone(ch.items[i:]), bundle: ch.bundle}
			clear(ch.items[i:])
			ch.items = ch.items[:i]
			return tail
		}
		seen[k] = true
	}
	return nil
}

// readError is a failure to read the input at where (a file and line).
// An error of the reader's own that is the client's (an upload that is
// not the gzip data its Content-Encoding says: a *fhir.Error of status
// 400) keeps its status and says where it happened.
func readError(where string, err error) error {
	var fe *fhir.Error
	if errors.As(err, &fe) && fe.Status < 500 {
		out := &fhir.Error{Status: fe.Status, Err: err}
		for _, is := range fe.Issues {
			is.Diagnostics = where + ": " + is.Diagnostics
			out.Issues = append(out.Issues, is)
		}
		return out
	}
	return fmt.Errorf("read %s: %w", where, err)
}

// utf8BOM is the byte order mark some editors write at the start of a
// UTF-8 file (Notepad, PowerShell, spreadsheet exports).
var utf8BOM = []byte("\xef\xbb\xbf")

// TrimBOM removes a UTF-8 byte order mark from the start of b. The NDJSON
// reader removes one from every line, not only the first: phr import
// sends the files of a directory as one stream, so the mark of each file
// after the first starts a line in the middle of it.
func TrimBOM(b []byte) []byte { return bytes.TrimPrefix(b, utf8BOM) }
