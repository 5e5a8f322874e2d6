package importer

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"

	"github.com/phr-project/phr/internal/fhir"
)

// itemSpool is a temporary file of items that wait: a JSON header (what
// reading and resolving them found) and the input text of each. The items
// deferred for their forward references and the entries of a history
// Bundle wait in one, so memory stays flat however many there are. The
// file is made on the first put and removed by close.
type itemSpool struct {
	pattern string // of the file's name (os.CreateTemp)
	f       *os.File
	w       *bufio.Writer
	at      int64
	recs    [][2]int64 // offset and length of each record
}

// put appends a record: hdr as JSON, then raw.
func (s *itemSpool) put(hdr any, raw []byte) error {
	if s.f == nil {
		f, err := os.CreateTemp("", s.pattern)
		if err != nil {
			return fmt.Errorf("keep items waiting in a temporary file: %w", err)
		}
		s.f, s.w = f, bufio.NewWriterSize(f, 1<<16)
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	var lb [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(lb[:], uint64(len(h)))
	s.w.Write(lb[:n])
	s.w.Write(h)
	if _, err := s.w.Write(raw); err != nil {
		return fmt.Errorf("keep items waiting in a temporary file: %w", err)
	}
	size := int64(n + len(h) + len(raw))
	s.recs = append(s.recs, [2]int64{s.at, size})
	s.at += size
	return nil
}

// len is the number of records.
func (s *itemSpool) len() int { return len(s.recs) }

// get reads record i: its header into hdr, and returns its text.
func (s *itemSpool) get(i int, hdr any) ([]byte, error) {
	if s.w.Buffered() > 0 {
		if err := s.w.Flush(); err != nil {
			return nil, fmt.Errorf("read items waiting in a temporary file: %w", err)
		}
	}
	buf := make([]byte, s.recs[i][1])
	if _, err := s.f.ReadAt(buf, s.recs[i][0]); err != nil {
		return nil, fmt.Errorf("read items waiting in a temporary file: %w", err)
	}
	hl, n := binary.Uvarint(buf)
	if n <= 0 || uint64(len(buf)-n) < hl {
		return nil, fmt.Errorf("read items waiting in a temporary file: record %d is damaged", i)
	}
	if err := json.Unmarshal(buf[n:n+int(hl)], hdr); err != nil {
		return nil, fmt.Errorf("read items waiting in a temporary file: %w", err)
	}
	return buf[n+int(hl):], nil
}

// close removes the file.
func (s *itemSpool) close() {
	if s.f != nil {
		s.f.Close()
		os.Remove(s.f.Name())
		s.f, s.w, s.recs, s.at = nil, nil, nil, 0
	}
}

// spooledInput is what reading an item found, kept with its input text
// while it waits in an itemSpool (a deferred item, a history Bundle's
// entry).
type spooledInput struct {
	Line    int          `json:"l"`
	Entry   int          `json:"e,omitempty"`
	FullURL string       `json:"u,omitempty"`
	Del     bool         `json:"d,omitempty"`
	Type    string       `json:"t,omitempty"`
	SID     string       `json:"s,omitempty"`
	Issues  []fhir.Issue `json:"is,omitempty"`
	// DelUpd and DelVer are a deletion's time and version at the source
	// (a resource's come from its meta when it is parsed again).
	DelUpd string `json:"du,omitempty"`
	DelVer string `json:"dv,omitempty"`
}

func inputOf(it *item) spooledInput {
	in := spooledInput{Line: it.line, Entry: it.entry, FullURL: it.fullURL, Del: it.del, Type: it.typ, SID: it.sid, Issues: it.issues}
	if it.del {
		in.DelUpd, in.DelVer = it.srcUpd, it.srcVer
	}
	return in
}

// item makes the item again, with its input text raw.
func (in spooledInput) item(raw []byte) *item {
	return &item{line: in.Line, entry: in.Entry, raw: raw, fullURL: in.FullURL, del: in.Del, typ: in.Type, sid: in.SID, issues: in.Issues, srcUpd: in.DelUpd, srcVer: in.DelVer}
}
