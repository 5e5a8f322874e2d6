package fhirjson

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
)

// canonicalRef is AppendCanonical written plainly, to check the real one.
func canonicalRef(v *Value) string {
	switch v.Kind {
	case Array:
		parts := make([]string, len(v.Items))
		for i, it := range v.Items {
			parts[i] = canonicalRef(it)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case Object:
		fs := append([]Field(nil), v.Fields...)
		sort.Slice(fs, func(a, b int) bool { return fs[a].Name < fs[b].Name })
		parts := make([]string, len(fs))
		for i, f := range fs {
			parts[i] = string(AppendString(nil, f.Name)) + ":" + canonicalRef(f.Value)
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	return string(v.Marshal())
}

// TestSyntheaForms checks every Synthea resource: parsing compact JSON and
// writing it back gives the same bytes, and so does a clone; the
// canonical form is the plain sort of the members.
func TestSyntheaForms(t *testing.T) {
	for i, raw := range syntheaRaw(t) {
		v, err := Parse(raw)
		if err != nil {
			t.Fatalf("resource %d: %v", i, err)
		}
		if out := v.Marshal(); !bytes.Equal(out, raw) {
			t.Fatalf("resource %d: Marshal gave\n%s\nnot\n%s", i, out, raw)
		}
		if out := v.Clone().Marshal(); !bytes.Equal(out, raw) {
			t.Fatalf("resource %d: the clone differs:\n%s", i, out)
		}
		if got, want := string(v.AppendCanonical(nil)), canonicalRef(v); got != want {
			t.Fatalf("resource %d: canonical form\n%s\nnot\n%s", i, got, want)
		}
	}
}

func TestCanonicalLargeObject(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("{")
	for i := 40; i > 0; i-- {
		if i < 40 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `"k%02d":{"z":%d,"a":[{"y":1,"x":2}]}`, i, i)
	}
	sb.WriteString("}")
	v, err := Parse([]byte(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(v.AppendCanonical(nil)), canonicalRef(v); got != want {
		t.Fatalf("canonical form\n%s\nnot\n%s", got, want)
	}
	if !strings.HasPrefix(string(v.AppendCanonical(nil)), `{"k01":{"a":[{"x":2,"y":1}],"z":1},"k02"`) {
		t.Fatalf("not sorted: %.60s", v.AppendCanonical(nil))
	}
}

// TestParsedSlicesAreOwn: members and items of parsed values share blocks,
// so appending to one value's slice must not overwrite another's.
func TestParsedSlicesAreOwn(t *testing.T) {
	v, err := Parse([]byte(`{"a":{"x":1},"b":{"y":2},"c":[1],"d":[2]}`))
	if err != nil {
		t.Fatal(err)
	}
	v.Get("a").Set("x2", NewNumber("3"))
	v.Get("a").SetAfter("x0", NewNumber("0"))
	v.Get("c").Items = append(v.Get("c").Items, NewNumber("9"))
	v.Set("e", NewBool(true))
	want := `{"a":{"x0":0,"x":1,"x2":3},"b":{"y":2},"c":[1,9],"d":[2],"e":true}`
	if got := string(v.Marshal()); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestCloneIsDeepAndKeepsEmpty(t *testing.T) {
	v, err := Parse([]byte(`{"a":[],"b":{},"c":[{"d":"e"}],"n":1.50}`))
	if err != nil {
		t.Fatal(err)
	}
	c := v.Clone()
	if c.Get("a").Items == nil {
		t.Error("an empty array became nil in the clone")
	}
	if got := string(c.Marshal()); got != string(v.Marshal()) {
		t.Fatalf("clone %s differs", got)
	}
	c.Get("c").Items[0].Set("d", NewString("changed"))
	c.Set("f", &Value{Kind: Null})
	if got := string(v.Marshal()); got != `{"a":[],"b":{},"c":[{"d":"e"}],"n":1.50}` {
		t.Fatalf("changing the clone changed the original: %s", got)
	}
	if (*Value)(nil).Clone() != nil {
		t.Error("Clone(nil) is not nil")
	}
}

func TestStrings(t *testing.T) {
	cases := map[string]string{
		`{"a\u0062":"x"}`:                                         `{"ab":"x"}`,
		`{"é":"ü\"q\\\/\n\t\r\b\f"}`:                              `{"é":"ü\"q\\/\n\t\r\u0008\u000c"}`,
		`{"k":"\ud83d\ude00 😀 é"}`:                                `{"k":"😀 😀 é"}`,
		`{"k":"\ud83d x"}`:                                        "{\"k\":\"\uFFFD x\"}",
		`{"long name that is not interned because it is long":1}`: `{"long name that is not interned because it is long":1}`,
	}
	for in, want := range cases {
		v, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("Parse(%s): %v", in, err)
			continue
		}
		if got := string(v.Marshal()); got != want {
			t.Errorf("Parse(%s).Marshal() = %s, want %s", in, got, want)
		}
	}
	bad := map[string]string{
		"{\"a\xff\":1}":        "invalid UTF-8",
		"{\"a\":\"\xc3\"}":     "invalid UTF-8",
		"{\"a\\x\":1}":         "invalid escape",
		"{\"a\x01\":1}":        "control character",
		"{\"a\":\"b\\n\x01\"}": "control character",
		`{"a`:                  "unterminated string",
		`{"a":"b\n`:            "unterminated string",
	}
	for in, want := range bad {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

// TestParseConcurrent parses from several goroutines with more distinct
// member names than the intern cache holds: every name must come back
// right (run with -race).
func TestParseConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				name := fmt.Sprintf("n%d_%d", (i*7+g)%5000, g%2)
				in := fmt.Sprintf(`{%q:[%q,{"system":"s","code":"c"}]}`, name, name)
				v, err := Parse([]byte(in))
				if err != nil {
					errs <- err
					return
				}
				if string(v.Marshal()) != in || v.Fields[0].Name != name {
					errs <- fmt.Errorf("%s parsed as %s", in, v.Marshal())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestCloneNilMembers: a tree being built may hold nil items or member
// values; Clone keeps them nil, as it always did.
func TestCloneNilMembers(t *testing.T) {
	v := NewObject(Field{Name: "a", Value: nil}, Field{Name: "b", Value: NewArray(nil, NewString("x"))})
	c := v.Clone()
	if c.Fields[0].Value != nil || c.Fields[1].Value.Items[0] != nil || c.Fields[1].Value.Items[1].Str != "x" {
		t.Fatalf("clone %+v", c)
	}
}
