package api_test

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
)

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestContentEncoding checks request bodies sent with a Content-Encoding:
// gzip is decoded (the limit on ordinary bodies applies to the decoded
// bytes), data that is not gzip is the client's error, and other codings
// are refused rather than read as FHIR JSON. The decoding is the HTTP
// layer's, the same on every store: SQLite only.
func TestContentEncoding(t *testing.T) {
	s := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.MaxBody = 4096 }})
	tok := s.AdminToken()
	r := s.Do("POST", "Patient", tok, gzipped(t, patientBody), "Content-Encoding", "gzip")
	p := expect(t, r, 201)
	if r = s.Do("GET", "Patient/"+p["id"].(string), tok, nil); r.Status != 200 || !strings.Contains(string(r.Body), `"birthDate":"1970-01-01"`) {
		t.Errorf("the gzip-encoded Patient was not stored as sent: %d %s", r.Status, r.Body)
	}
	// x-gzip, and a transaction.
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:1","resource":` + patientBody + `,"request":{"method":"POST","url":"Patient"}}]}`
	r = s.Do("POST", "", tok, gzipped(t, tx), "Content-Encoding", "x-gzip")
	if b := expect(t, r, 200); b["type"] != "transaction-response" {
		t.Errorf("gzip transaction: %s", r.Body)
	}
	// A body that is not gzip.
	r = s.Do("POST", "Patient", tok, patientBody, "Content-Encoding", "gzip")
	expect(t, r, 400)
	if txt := outcomeText(t, r); !strings.Contains(txt, "gzip") {
		t.Errorf("not gzip: %s", txt)
	}
	// gzip data cut short.
	z := gzipped(t, patientBody)
	r = s.Do("POST", "Patient", tok, z[:len(z)-12], "Content-Encoding", "gzip")
	expect(t, r, 400)
	// Another coding.
	r = s.Do("POST", "Patient", tok, patientBody, "Content-Encoding", "br")
	expect(t, r, 415)
	if txt := outcomeText(t, r); !strings.Contains(txt, `\"br\"`) {
		t.Errorf("br: %s", txt)
	}
	// 40 KB of JSON compress to far less than the 4 KiB limit, and are
	// refused for what they decode to.
	big := `{"resourceType":"Patient","name":[{"family":"` + strings.Repeat("a", 40000) + `"}]}`
	if z := gzipped(t, big); len(z) >= 4096 {
		t.Fatalf("the compressed body is %d bytes", len(z))
	}
	r = s.Do("POST", "Patient", tok, gzipped(t, big), "Content-Encoding", "gzip")
	expect(t, r, 413)
	r = s.Do("POST", "Patient", tok, big)
	expect(t, r, 413)
}
