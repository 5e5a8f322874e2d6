package cli

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phr-project/phr/internal/importer"
)

func init() {
	register(command{name: "import", summary: "import files (NDJSON, Bundle, .phr, .sphr, SMART Health Card, Bulk Data export dir) and merge them", run: runImport})
	register(command{name: "log", summary: "list import batches (or one: --batch N)", run: runLog})
	register(command{name: "diff", summary: "show what changed between two versions: phr diff T/id [v1 v2]", run: runDiff})
	register(command{name: "revert", summary: "write an old version back as a new one: phr revert T/id --to N", run: runRevert})
	register(command{name: "conflicts", summary: "list, show and resolve merge conflicts", run: runConflicts})
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// importProgress counts what has been sent.
type importProgress struct {
	bytes, lines atomic.Int64
}

type countReader struct {
	r io.Reader
	p *importProgress
}

func (c countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.bytes.Add(int64(n))
	c.p.lines.Add(int64(bytes.Count(b[:n], []byte{'\n'})))
	return n, err
}

// upload is one request body to send to $import.
type upload struct {
	name, contentType string
	open              func(w io.Writer) error // writes the body
	size              int64
	// files, for NDJSON files sent as one stream, says which file each
	// line of the stream came from.
	files *lineMap
	// origin is where the content says it came from, if it says.
	origin origin
}

// ndjsonUpload sends NDJSON files as one stream (one batch, so the
// identities of one file resolve the references of the next), each ended
// by a newline. The server names a line of the stream; the CLI tells it
// as the file's own line (lineMap).
func ndjsonUpload(name string, files []string, size int64) upload {
	m := &lineMap{stream: name}
	return upload{name: name, contentType: "application/fhir+ndjson", size: size, files: m, open: func(w io.Writer) error {
		lw := lineWriter{w: w, m: m}
		for _, fp := range files {
			m.begin(filepath.Base(fp))
			if err := copyFile(lw, fp); err != nil {
				return err
			}
			if _, err := lw.Write([]byte{'\n'}); err != nil {
				return err
			}
		}
		return nil
	}}
}

// lineMap records where each file of a stream of NDJSON files starts.
type lineMap struct {
	stream string // the stream's name, as the server's issues give it
	mu     sync.Mutex
	lines  int      // newlines written so far
	starts []int    // the stream's line where each file starts
	names  []string // the files
}

func (m *lineMap) begin(name string) {
	m.mu.Lock()
	m.starts = append(m.starts, m.lines+1)
	m.names = append(m.names, name)
	m.mu.Unlock()
}

// lineWriter counts the newlines written through it into m.
type lineWriter struct {
	w io.Writer
	m *lineMap
}

func (l lineWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	l.m.mu.Lock()
	l.m.lines += bytes.Count(p[:n], []byte{'\n'})
	l.m.mu.Unlock()
	return n, err
}

// tell rewrites each "STREAM line N" of a message as the file's own
// "FILE line n". Lines are reported after they were written, so their
// file has begun.
func (m *lineMap) tell(msg string) string {
	if m == nil {
		return msg
	}
	key := m.stream + " line "
	var b strings.Builder
	for {
		i := strings.Index(msg, key)
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		j := i + len(key)
		k := j
		for k < len(msg) && msg[k] >= '0' && msg[k] <= '9' {
			k++
		}
		n, err := strconv.Atoi(msg[j:k])
		b.WriteString(msg[:i])
		if name, line, ok := m.at(n); err == nil && ok {
			fmt.Fprintf(&b, "%s line %d", name, line)
		} else {
			b.WriteString(msg[i:k])
		}
		msg = msg[k:]
	}
}

// at finds the file and its own line of the stream's line n.
func (m *lineMap) at(n int) (string, int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.SearchInts(m.starts, n+1) - 1
	if i < 0 {
		return "", 0, false
	}
	return m.names[i], n - m.starts[i] + 1, true
}

func runImport(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("import", "FILE|DIR... [--source S] [--server URL --token T | --data DIR] [--passphrase P] [--validate]", errOut)
	var (
		cf         clientFlags
		source     string
		passphrase string
		validate   bool
		quiet      bool
	)
	cf.add(f)
	cf.cards = &cardFlags{}
	cf.cards.add(f)
	f.string(&source, "source", "", "where the data came from (a label or URL); default: the FHIR server that a Bulk Data manifest or a phr export's cover page names, else the one origin all the NDJSON's resources give in meta.source, else the file or directory name")
	f.string(&passphrase, "passphrase", "", "passphrase of an encrypted .sphr; prefer the environment variable to the flag, which other users can see")
	f.bool(&validate, "validate", false, "check and report only; write nothing")
	f.bool(&quiet, "quiet", false, "print only the summary lines")
	// Flags may follow the files: phr import FILE --passphrase P.
	if err := f.parse(reorder(args)); err != nil {
		return err
	}
	if f.NArg() == 0 {
		return fmt.Errorf("%w: name at least one file or directory to import", errUsage)
	}
	// An offline import only writes: a bigger SQLite writer cache pays.
	cf.bulk = !validate
	c, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	tty := isTerminal(errOut)
	for _, p := range f.Args() {
		ups, err := uploads(p, passphrase, errOut)
		if err != nil {
			return err
		}
		for _, u := range ups {
			src := source
			if src == "" && u.origin.label != "" {
				src = u.origin.label
				fmt.Fprintf(errOut, "phr: source %s, %s (--source names another)\n", src, u.origin.why)
			} else if src == "" {
				src = pathName(p)
			}
			if err := sendImport(ctx, c, u, src, passphrase, validate, quiet, tty, out, errOut); err != nil {
				return err
			}
		}
	}
	return nil
}

// uploads turns a path into request bodies: the NDJSON files of a
// directory (a Bulk Data export) become one stream (one batch), in the
// order identities are best resolved; Bundles and archives go one by one.
// A file of a directory that is not FHIR is skipped with a note on errOut.
// passphrase opens an encrypted archive to read its cover page.
func uploads(p, passphrase string, errOut io.Writer) ([]upload, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	var files []string
	if st.IsDir() {
		if files, err = importer.DirFiles(p); err != nil {
			return nil, err
		}
	} else {
		files = []string{p}
	}
	var ndjson []string
	var out []upload
	var from origin // a manifest's
	for _, fp := range files {
		if st.IsDir() && strings.HasPrefix(filepath.Base(fp), "error-") {
			continue // a Bulk Data export's OperationOutcomes, not the record
		}
		kind, err := sniff(fp)
		if err != nil {
			return nil, err
		}
		if kind == "manifest" {
			m, err := readManifest(fp)
			if err != nil && !st.IsDir() {
				return nil, err
			}
			if b := exportBase(m.Request); b != "" {
				from = origin{b, "the FHIR server the export's manifest names"}
			}
			if st.IsDir() {
				continue // the directory's files are imported themselves
			}
			files, err := m.localFiles(fp)
			if err != nil {
				return nil, err
			}
			ndjson = append(ndjson, files...)
			continue
		}
		if kind == "skip" && !st.IsDir() {
			kind = "json" // named on its own: the server says what is wrong with it
		}
		switch kind {
		case "skip":
			fmt.Fprintf(errOut, "phr: skipped %s: JSON without a resourceType, not FHIR\n", fp)
		case "ndjson":
			ndjson = append(ndjson, fp)
		case "zip":
			fp := fp
			st, _ := os.Stat(fp)
			u := upload{name: filepath.Base(fp), contentType: "application/zip", size: st.Size(), open: func(w io.Writer) error { return copyFile(w, fp) }}
			if o := zipCoverOrigin(fp, passphrase); o != "" {
				u.origin = origin{o, "the server whose export it is, as its cover page says"}
			}
			out = append(out, u)
		default:
			fp := fp
			u := upload{name: filepath.Base(fp), contentType: "application/fhir+json", open: func(w io.Writer) error { return copyFile(w, fp) }}
			if o := coverOrigin(fp); o != "" {
				u.origin = origin{o, "the server whose export it is, as its cover page says"}
			}
			out = append(out, u)
		}
	}
	if len(ndjson) > 0 {
		var size int64
		for _, fp := range ndjson {
			if st, err := os.Stat(fp); err == nil && !strings.HasSuffix(fp, ".gz") {
				size += st.Size()
			}
		}
		u := ndjsonUpload(pathName(p), ndjson, size)
		if from.label == "" {
			if o := coverOrigin(ndjson[0]); o != "" {
				u.origin = origin{o, "the server whose export it is, as its cover page says"}
			} else if o := metaSourceOrigin(ndjson); o != "" {
				u.origin = origin{o, "the origin every resource names in meta.source"}
			}
		}
		out = append([]upload{u}, out...)
	}
	for i := range out {
		if out[i].origin.label == "" {
			out[i].origin = from
		}
	}
	return out, nil
}

// sniff classifies a file: ndjson, json (a document), manifest, zip or skip.
func sniff(fp string) (string, error) {
	br, done, err := openInput(fp)
	if err != nil {
		return "", err
	}
	defer done()
	head, _ := br.Peek(1 << 16)
	if bytes.HasPrefix(head, []byte("PK\x03\x04")) {
		return "zip", nil
	}
	full := len(head) == 1<<16    // the file goes on
	head = importer.TrimBOM(head) // (the importer skips it)
	if full && head[0] == '{' && bytes.IndexByte(head, '\n') < 0 && bytes.IndexByte(head, '\r') < 0 {
		if kind := longFirstLine(br); kind != "" {
			return kind, nil
		}
	}
	first := head
	if nl := bytes.IndexByte(head, '\n'); nl >= 0 {
		first = head[:nl]
	}
	first = bytes.TrimSpace(first)
	if len(first) > 0 && json.Valid(first) {
		if healthCardJSON(first) {
			return "json", nil // a SMART Health Card file, or a card's payload, on one line
		}
		if !bytes.Contains(first, []byte(`"resourceType"`)) {
			if bytes.Contains(first, []byte(`"transactionTime"`)) && bytes.Contains(first, []byte(`"output"`)) {
				return "manifest", nil
			}
			return "skip", nil
		}
		if bytes.Contains(first[:min(len(first), 64)], []byte(`"Bundle"`)) && bytes.IndexByte(head, '\n') < 0 {
			return "json", nil
		}
		return "ndjson", nil
	}
	if bytes.Contains(head, []byte(`"transactionTime"`)) && bytes.Contains(head, []byte(`"output"`)) && !bytes.Contains(head, []byte(`"resourceType"`)) {
		return "manifest", nil
	}
	if !full && notFHIRDocument(head) {
		return "skip", nil
	}
	return "json", nil
}

// notFHIRDocument reports whether doc, a whole JSON document, is an object
// without a resourceType that is not a SMART Health Card or a card's
// payload either (a configuration file, a SMART Health Link's payload...),
// or an array of such objects.
func notFHIRDocument(doc []byte) bool {
	doc = bytes.TrimSpace(doc)
	var obj map[string]json.RawMessage
	if json.Unmarshal(doc, &obj) == nil {
		_, has := obj["resourceType"]
		return !has && !healthCardJSON(doc)
	}
	var arr []map[string]json.RawMessage
	if json.Unmarshal(doc, &arr) != nil || len(arr) == 0 {
		return false
	}
	for _, o := range arr {
		_, res := o["resourceType"]
		_, entry := o["resource"]
		if res || entry {
			return false
		}
	}
	return true
}

// pathName is the name of a file or directory to import, for the batch
// and the default source label: its last element, of the absolute path
// when p is "." or "..".
func pathName(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	return filepath.Base(filepath.Clean(p))
}

// longFirstLine classifies a file whose first line is longer than sniff's
// head (a Synthea Provenance naming every resource of a patient runs to
// 140 KB): NDJSON when that line ends with the end of an object and the
// next begins another, a JSON document when the file is that one line,
// and "" (undecided) otherwise. The line is read through, not kept.
func longFirstLine(br *bufio.Reader) string {
	var last byte
	for {
		chunk, err := br.ReadSlice('\n')
		if t := bytes.TrimRight(chunk, " \t\r\n"); len(t) > 0 {
			last = t[len(t)-1]
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "json" // one line: a single document
		}
		break
	}
	for {
		c, err := br.ReadByte()
		switch {
		case err != nil:
			return "json" // one line and blank ones
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			continue
		case c == '{' && last == '}':
			return "ndjson"
		default:
			return ""
		}
	}
}

// healthCardJSON reports whether line is a SMART Health Card file
// (verifiableCredential) or a card's payload (vc.credentialSubject, whose
// fhirBundle has a resourceType, though the payload has none).
func healthCardJSON(line []byte) bool {
	var v struct {
		ResourceType         *string         `json:"resourceType"`
		VerifiableCredential json.RawMessage `json:"verifiableCredential"`
		VC                   struct {
			CredentialSubject struct {
				FHIRBundle json.RawMessage `json:"fhirBundle"`
			} `json:"credentialSubject"`
		} `json:"vc"`
	}
	if !bytes.Contains(line, []byte(`"verifiableCredential"`)) && !bytes.Contains(line, []byte(`"fhirBundle"`)) || json.Unmarshal(line, &v) != nil {
		return false
	}
	return v.ResourceType == nil && (v.VerifiableCredential != nil || v.VC.CredentialSubject.FHIRBundle != nil)
}

// bulkManifest is what phr import reads of a Bulk Data manifest.
type bulkManifest struct {
	Request string `json:"request"`
	Output  []struct{ Type, URL string }
	Deleted []struct{ Type, URL string }
}

// readManifest reads the Bulk Data manifest at fp. It never returns nil:
// a manifest that cannot be read is empty, with the error.
func readManifest(fp string) (*bulkManifest, error) {
	m := &bulkManifest{}
	b, err := os.ReadFile(fp)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, m); err != nil {
		return &bulkManifest{}, fmt.Errorf("%s: not a Bulk Data manifest: %w", fp, err)
	}
	return m, nil
}

// localFiles lists the local files of the manifest's output (and
// deleted) entries, found by name beside the manifest at fp.
func (m *bulkManifest) localFiles(fp string) ([]string, error) {
	dir := filepath.Dir(fp)
	var out []string
	seq := map[string]int{}
	for i, o := range append(m.Output, m.Deleted...) {
		prefix := ""
		if i >= len(m.Output) {
			prefix = "deleted-"
		}
		seq[prefix+o.Type]++
		name := o.URL
		if u, err := url.Parse(o.URL); err == nil && u.Path != "" {
			name = u.Path
		}
		local := filepath.Join(dir, filepath.Base(name))
		if _, err := os.Stat(local); err != nil {
			// As `phr bulk export` names the files it downloads.
			local = filepath.Join(dir, fmt.Sprintf("%s%s-%d.ndjson", prefix, o.Type, seq[prefix+o.Type]))
			if _, err := os.Stat(local); err != nil {
				return nil, fmt.Errorf("%s names %s, which is not beside it (download the export first, e.g. with phr bulk export)", fp, o.URL)
			}
		}
		out = append(out, local)
	}
	return out, nil
}

func copyFile(w io.Writer, fp string) error {
	br, done, err := openInput(fp)
	if err != nil {
		return err
	}
	defer done()
	_, err = io.Copy(w, br)
	return err
}

// openInput opens a file to import as the text phr import sends, for
// sniff to classify and copyFile to send: a .gz file decompressed, and a
// UTF-16 one decoded, as a directory's NDJSON files go as one stream,
// where the server would not see its byte order mark. done closes it.
func openInput(fp string) (br *bufio.Reader, done func(), err error) {
	f, err := os.Open(fp)
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = f
	done = func() { f.Close() }
	if strings.HasSuffix(fp, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: %w", fp, err)
		}
		r = zr
		done = func() { zr.Close(); f.Close() }
	}
	br = bufio.NewReaderSize(r, 1<<16)
	if rd, enc := importer.FromUTF16(br); enc != "" {
		br = bufio.NewReaderSize(rd, 1<<16)
	}
	return br, done, nil
}

// sendImport streams one upload to $import and prints the results.
func sendImport(ctx context.Context, c *fhirClient, u upload, source, passphrase string, validate, quiet, tty bool, out, errOut io.Writer) error {
	pr, pw := io.Pipe()
	defer pr.Close() // stops the writer if the request ended early
	var prog importProgress
	go func() { pw.CloseWithError(u.open(pw)) }()
	q := url.Values{"source": {source}, "filename": {u.name}}
	if validate {
		q.Set("mode", "validate")
	}
	headers := []string{"Content-Type", u.contentType, "Accept", "application/x-ndjson"}
	if passphrase != "" {
		headers = append(headers, "X-PHR-Passphrase", passphrase)
	}
	start := time.Now()
	var stop chan struct{}
	var wg sync.WaitGroup
	var outMu sync.Mutex // the progress goroutine and the results share errOut
	if !quiet {
		// A redrawn line on a terminal; otherwise a plain line now and then.
		every, plainEvery := 200*time.Millisecond, 10*time.Second
		if !tty {
			every = plainEvery
		}
		stop = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					if tty {
						outMu.Lock()
						fmt.Fprint(errOut, "\r\033[K")
						outMu.Unlock()
					}
					return
				case <-tick.C:
					el := time.Since(start).Seconds()
					b, l := prog.bytes.Load(), prog.lines.Load()
					pct := ""
					if u.size > 0 {
						pct = fmt.Sprintf(" %3.0f%%", 100*float64(b)/float64(u.size))
					}
					outMu.Lock()
					if tty {
						fmt.Fprintf(errOut, "\r\033[K%s:%s %s, %d resources, %.0f resources/s", u.name, pct, humanBytes(b), l, float64(l)/el)
					} else {
						fmt.Fprintf(errOut, "importing %s:%s %s read, %d resources, %.0f resources/s\n", u.name, pct, humanBytes(b), l, float64(l)/el)
					}
					outMu.Unlock()
				}
			}
		}()
	}
	var body io.Reader = countReader{pr, &prog}
	if c.remote && u.contentType != "application/zip" {
		// Over the network, text goes compressed (FHIR JSON about
		// tenfold); the server reads it as a stream all the same.
		zr := gzipStream(body)
		defer zr.Close()
		body = zr
		headers = append(headers, "Content-Encoding", "gzip")
	}
	resp, err := c.do(ctx, "POST", "Bundle/$import?"+q.Encode(), body, headers...)
	var stopOnce sync.Once
	stopProgress := func() {
		stopOnce.Do(func() {
			if stop != nil {
				close(stop)
				wg.Wait()
			}
		})
	}
	defer stopProgress()
	if err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("import %s: %w", u.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("import %s: %s: %s", u.name, resp.Status, outcomeText(b))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	shown, hidden, renamed := 0, 0, 0
	var summary []byte
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(`{"resourceType":"Parameters"`)) {
			summary = append([]byte(nil), line...)
			continue
		}
		if bytes.Contains(line, []byte(importer.Renamed)) {
			renamed++
		}
		if quiet {
			continue
		}
		if shown >= 50 {
			hidden++
			continue
		}
		shown++
		msg := u.files.tell(outcomeText(line))
		outMu.Lock()
		if tty {
			fmt.Fprint(errOut, "\r\033[K")
		}
		fmt.Fprintln(errOut, msg)
		outMu.Unlock()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("import %s: reading the results: %w", u.name, err)
	}
	stopProgress()
	if hidden > 0 {
		fmt.Fprintf(errOut, "... and %d more problems (phr log --batch N and the $import-quarantine operation list them)\n", hidden)
	}
	if summary == nil {
		return fmt.Errorf("import %s: the server sent no summary (the import may be incomplete; run it again)", u.name)
	}
	s := params(summary)
	el := time.Since(start)
	verb := "imported"
	if validate {
		verb = "validated"
	}
	fmt.Fprintf(out, "%s %s: batch %s: created %s, updated %s, unchanged %s, conflicts %s, rejected %s, deleted %s (%s resources, %s in %.1fs, %.0f resources/s)\n",
		verb, u.name, s["batch"], s["created"], s["updated"], s["unchanged"], s["conflicts"], s["rejected"], s["deleted"], s["resources"], humanBytes(prog.bytes.Load()), el.Seconds(), atof(s["resources"])/el.Seconds())
	if renamed > 0 && !quiet {
		fmt.Fprintf(errOut, "phr: %d resources have ids that another source gave other content, so they are stored as new resources beside those. If %s comes from the same system as an earlier import, import it with that import's --source (phr log lists them): its changes then update that import's resources.\n", renamed, u.name)
	}
	return nil
}

// gzipStream returns a reader of src compressed with gzip (its fastest
// level), compressing as it is read. Closing it stops the compression.
func gzipStream(src io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
		_, err := io.Copy(zw, src)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func atof(s string) float64 {
	var f float64
	fmt.Sscan(s, &f)
	return f
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// params flattens a Parameters resource's top-level values to strings.
func params(b []byte) map[string]string {
	var p struct {
		Parameter []map[string]any
	}
	json.Unmarshal(b, &p)
	out := map[string]string{}
	for _, x := range p.Parameter {
		name, _ := x["name"].(string)
		for k, v := range x {
			if strings.HasPrefix(k, "value") {
				out[name] = fmt.Sprint(v)
			}
		}
	}
	return out
}
