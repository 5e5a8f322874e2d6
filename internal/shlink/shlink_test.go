package shlink

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The test vector of the SHL specification (links-specification, "Example
// SHLink generation"), also quoted in shared/data/README.md.
var (
	vectorPayload = Payload{
		URL:   "https://ehr.example.org/qr/Y9xwkUdtmN9wwoJoN3ffJIhX2UGvCL1JnlPVNL3kDWM/m",
		Flag:  "LP",
		Key:   "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q",
		Label: "Back-to-school immunizations for Oliver Brown",
	}
	vectorLink = "shlink:/eyJ1cmwiOiJodHRwczovL2Voci5leGFtcGxlLm9yZy9xci9ZOXh3a1VkdG1OOXd3b0pvTjNmZkpJaFgyVUd2Q0wxSm5sUFZOTDNrRFdNL20iLCJmbGFnIjoiTFAiLCJrZXkiOiJyeFRnWWxPYUtKUEZ0Y0VkMHFjY2VOOHdFVTRwOTRTcUF3SVdRZTZ1WDdRIiwibGFiZWwiOiJCYWNrLXRvLXNjaG9vbCBpbW11bml6YXRpb25zIGZvciBPbGl2ZXIgQnJvd24ifQ"
)

func TestSpecVector(t *testing.T) {
	got, err := Encode(vectorPayload)
	if err != nil {
		t.Fatal(err)
	}
	if got != vectorLink {
		t.Errorf("Encode(spec payload) =\n%s\nwant\n%s", got, vectorLink)
	}
	p, err := Decode(vectorLink)
	if err != nil {
		t.Fatal(err)
	}
	if p != vectorPayload {
		t.Errorf("Decode(spec link) = %+v", p)
	}
	if !p.HasFlag('L') || !p.HasFlag('P') || p.HasFlag('U') {
		t.Errorf("flags of %q misread", p.Flag)
	}
}

func shlDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "data", "smart-health-links")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared test data %s is absent (it sits beside the repository as ../shared); skipping", dir)
	}
	return dir
}

type jsonPayload struct {
	URL   string `json:"url"`
	Flag  string `json:"flag"`
	Key   string `json:"key"`
	Label string `json:"label"`
}

func (j jsonPayload) payload() Payload {
	return Payload{URL: j.URL, Flag: j.Flag, Key: j.Key, Label: j.Label}
}

// TestPublishedLinks decodes every published example link and checks it
// against the payload published beside it; re-encoding gives the same text.
func TestPublishedLinks(t *testing.T) {
	dir := shlDir(t)
	links, _ := filepath.Glob(filepath.Join(dir, "*-shl.txt"))
	if len(links) == 0 {
		t.Fatal("no *-shl.txt examples found")
	}
	for _, f := range links {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Decode(string(b))
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		// CARIN_INS_CD-bundle-01-shl.txt sits beside -shl-details.json.
		details := strings.TrimSuffix(f, ".txt") + "-details.json"
		d, err := os.ReadFile(details)
		if err != nil {
			t.Fatal(err)
		}
		var want jsonPayload
		var wrapped struct {
			P *jsonPayload `json:"shlinkJsonPayload"`
		}
		if json.Unmarshal(d, &wrapped); wrapped.P != nil {
			want = *wrapped.P
		} else if err := json.Unmarshal(d, &want); err != nil {
			t.Fatal(err)
		}
		if p != want.payload() {
			t.Errorf("%s decodes to %+v, details say %+v", filepath.Base(f), p, want)
		}
		link := strings.TrimSpace(string(b))
		again, err := Encode(p)
		if err != nil {
			t.Errorf("%s: re-encode: %v", filepath.Base(f), err)
		} else if !strings.HasSuffix(link, "#"+again) {
			t.Errorf("%s: re-encoded as %s", filepath.Base(f), again)
		}
	}

	// The details files also carry bare and viewer forms of their links.
	details, _ := filepath.Glob(filepath.Join(dir, "*details.json"))
	n := 0
	for _, f := range details {
		b, _ := os.ReadFile(f)
		var d struct {
			P      *jsonPayload `json:"shlinkJsonPayload"`
			Bare   string       `json:"shlinkBare"`
			Shlink string       `json:"shlink"`
		}
		if err := json.Unmarshal(b, &d); err != nil || d.P == nil {
			continue
		}
		for _, s := range []string{d.Bare, d.Shlink} {
			p, err := Decode(s)
			if err != nil {
				t.Errorf("%s: %v", filepath.Base(f), err)
			} else if p != d.P.payload() {
				t.Errorf("%s: %s decodes to %+v", filepath.Base(f), s, p)
			}
			n++
		}
		enc, err := Encode(d.P.payload())
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		} else if !strings.HasSuffix(d.Bare, enc) {
			t.Errorf("%s: encodes as %s, published %s", filepath.Base(f), enc, d.Bare)
		}
	}
	if n == 0 {
		t.Error("no details files with links found")
	}
}

// TestIGPayloads decodes the IG's example payload objects: the second is
// valid; the first carries exp as a string of milliseconds (rejected, with
// the member named) and an unknown member.
func TestIGPayloads(t *testing.T) {
	dir := filepath.Join(shlDir(t), "ig-resources")
	valid, err := os.ReadFile(filepath.Join(dir, "shl-payload-2.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want jsonPayload
	if err := json.Unmarshal(valid, &want); err != nil {
		t.Fatal(err)
	}
	p, err := Decode(Prefix + base64.RawURLEncoding.EncodeToString(valid))
	if err != nil {
		t.Fatal(err)
	}
	if p != want.payload() {
		t.Errorf("shl-payload-2 decodes to %+v", p)
	}

	odd, err := os.ReadFile(filepath.Join(dir, "shl-payload-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Decode(Prefix + base64.RawURLEncoding.EncodeToString(odd))
	if err == nil || !strings.Contains(err.Error(), `"exp"`) || !strings.Contains(err.Error(), "1767225600000") {
		t.Errorf("shl-payload-1 (exp as a string): error %v, want one naming exp and its value", err)
	}
	// Encode orders members as that example does: url, flag, key, exp, v,
	// then label.
	var order []string
	for _, k := range memberOrder(t, odd) {
		order = append(order, strings.TrimSuffix(k, "zzz"))
	}
	link, err := Encode(Payload{URL: vectorPayload.URL, Flag: "LP", Key: vectorPayload.Key, Exp: 1767225600, V: 1, Label: "x"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(link, Prefix))
	if err != nil {
		t.Fatal(err)
	}
	if got := memberOrder(t, raw); strings.Join(got, ",") != strings.Join(order, ",") {
		t.Errorf("member order %v, the IG example has %v", got, order)
	}
}

// memberOrder lists the member names of a JSON object in document order.
func memberOrder(t *testing.T, obj []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(obj))
	var order []string
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return order
}

func TestRoundTrip(t *testing.T) {
	for _, p := range []Payload{
		{URL: "https://phr.example/shl/" + NewManifestID(), Key: NewKey()},
		{URL: "http://127.0.0.1:8080/shl/" + NewManifestID(), Key: NewKey(), Exp: 1767225600, Flag: "L", Label: `Ré "quoted" <b>&\ label ✓`, V: 1},
		{URL: "https://phr.example/shl/" + NewManifestID() + "?x=1&y=2", Key: NewKey(), Flag: "LU", Label: strings.Repeat("é", 80)},
	} {
		link, err := Encode(p)
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		got, err := Decode(link)
		if err != nil || got != p {
			t.Errorf("Decode(Encode(%+v)) = %+v, %v", p, got, err)
		}
		viewer, err := EncodeViewer("https://viewer.example/shl/index.html", p)
		if err != nil {
			t.Fatal(err)
		}
		if viewer != "https://viewer.example/shl/index.html#"+link {
			t.Errorf("viewer link %s", viewer)
		}
		if got, err := Decode(viewer); err != nil || got != p {
			t.Errorf("Decode(viewer link) = %+v, %v", got, err)
		}
	}
	// JSON special characters are escaped as JSON.stringify does, not
	// HTML-escaped as encoding/json does by default.
	link, _ := Encode(Payload{URL: "https://a.example/x", Key: vectorPayload.Key, Label: "<a&b>"})
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(link, Prefix))
	if !strings.Contains(string(raw), `"label":"<a&b>"`) {
		t.Errorf("payload JSON %s", raw)
	}
}

func TestEncodeValidation(t *testing.T) {
	ok := vectorPayload
	cases := []struct {
		name    string
		edit    func(p *Payload)
		mention string
	}{
		{"no url", func(p *Payload) { p.URL = "" }, "url is required"},
		{"long url", func(p *Payload) { p.URL = "https://a.example/" + strings.Repeat("x", 111) }, "129 characters"},
		{"relative url", func(p *Payload) { p.URL = "/shl/abc" }, "absolute"},
		{"ftp url", func(p *Payload) { p.URL = "ftp://a.example/abc" }, "absolute https"},
		{"fragment", func(p *Payload) { p.URL = "https://a.example/abc#x" }, "fragment"},
		{"short key", func(p *Payload) { p.Key = p.Key[:42] }, "42 characters"},
		{"key not base64url", func(p *Payload) { p.Key = p.Key[:42] + "+" }, "not base64url"},
		{"key stray bits", func(p *Payload) { p.Key = p.Key[:42] + "R" }, "not base64url"},
		{"flags out of order", func(p *Payload) { p.Flag = "PL" }, "alphabetical"},
		{"flag twice", func(p *Payload) { p.Flag = "LL" }, "alphabetical"},
		{"unknown flag", func(p *Payload) { p.Flag = "LX" }, "unknown flag"},
		{"lower-case flag", func(p *Payload) { p.Flag = "l" }, "unknown flag"},
		{"U with P", func(p *Payload) { p.Flag = "PU" }, "cannot be combined"},
		{"long label", func(p *Payload) { p.Label = strings.Repeat("a", 81) }, "81 characters"},
		{"bad utf-8 label", func(p *Payload) { p.Label = "a\xffb" }, "UTF-8"},
		{"negative exp", func(p *Payload) { p.Exp = -1 }, "negative"},
		{"version 2", func(p *Payload) { p.V = 2 }, "version 2"},
	}
	for _, c := range cases {
		p := ok
		c.edit(&p)
		_, err := Encode(p)
		if err == nil || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.mention)
		}
	}
	p := ok
	p.URL = "https://a.example/" + strings.Repeat("x", 110) // exactly 128
	p.Label = strings.Repeat("a", 80)
	if _, err := Encode(p); err != nil {
		t.Errorf("at the limits: %v", err)
	}
	for _, v := range []string{"", "viewer.example", "https://v.example/#x", "javascript:alert(1)"} {
		if _, err := EncodeViewer(v, ok); err == nil {
			t.Errorf("EncodeViewer(%q) accepted", v)
		}
	}
}

func TestDecodeLenientAndErrors(t *testing.T) {
	enc := func(j string) string { return Prefix + base64.RawURLEncoding.EncodeToString([]byte(j)) }
	key := vectorPayload.Key
	// Unknown members and flags are ignored; padding and spaces forgiven.
	p, err := Decode("  " + enc(`{"url":"https://a.example/m","key":"`+key+`","flag":"XLQ","future":{"a":[1]},"v":1,"exp":1700000000}`) + "==\n")
	if err != nil {
		t.Fatal(err)
	}
	if p.URL != "https://a.example/m" || !p.HasFlag('L') || p.HasFlag('P') || p.V != 1 || p.Exp != 1700000000 {
		t.Errorf("lenient decode gave %+v", p)
	}
	cases := []struct{ in, mention string }{
		{"https://viewer.example/#nothing", "not a SMART Health Link"},
		{"shlink:/???", "not base64url"},
		{enc(`[1]`), "not a JSON object"},
		{enc(`{"url":"x","key":"` + key + `"} {}`), "after the JSON object"},
		{enc(`{"key":"` + key + `"}`), `no "url"`},
		{enc(`{"url":"https://a.example/m"}`), `no "key"`},
		{enc(`{"url":"https://a.example/m","key":""}`), `"key" is empty`},
		{enc(`{"url":5,"key":"` + key + `"}`), `"url" must be a string`},
		{enc(`{"url":"https://a.example/m","key":"abc"}`), "3 characters"},
		{enc(`{"url":"https://a.example/m","key":"` + key + `","exp":1.7e9}`), `"exp" must be a whole number`},
		{enc(`{"url":"https://a.example/m","key":"` + key + `","exp":-5}`), `"exp" must be a whole number`},
		{enc(`{"url":"https://a.example/m","key":"` + key + `","v":"1"}`), `"v" must be a positive integer`},
		{enc(`{"url":"https://a.example/m","key":"` + key + `","flag":"PU"}`), "combines U"},
	}
	for _, c := range cases {
		_, err := Decode(c.in)
		if err == nil || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("Decode(%.60s): error %v, want one mentioning %q", c.in, err, c.mention)
		}
	}
}

func TestNewKeyAndManifestID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		for _, s := range []string{NewKey(), NewManifestID()} {
			if len(s) != 43 {
				t.Fatalf("%q is %d characters, want 43", s, len(s))
			}
			b, err := base64.RawURLEncoding.Strict().DecodeString(s)
			if err != nil || len(b) != 32 {
				t.Fatalf("%q: %d bytes, %v", s, len(b), err)
			}
			if seen[s] {
				t.Fatalf("%q repeated", s)
			}
			seen[s] = true
		}
	}
	p := Payload{URL: "https://a.example/" + NewManifestID(), Key: NewKey()}
	if k, err := p.KeyBytes(); err != nil || len(k) != 32 {
		t.Errorf("KeyBytes: %d bytes, %v", len(k), err)
	}
}

func BenchmarkEncode(b *testing.B) {
	for b.Loop() {
		if _, err := Encode(vectorPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for b.Loop() {
		if _, err := Decode(vectorLink); err != nil {
			b.Fatal(err)
		}
	}
}
