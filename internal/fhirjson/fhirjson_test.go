package fhirjson

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	cases := []string{
		`{"a":1.50,"b":[true,false,null],"c":{"d":"x\"y\\z\u00e9\n"},"e":-0.0e+10,"f":[]}`,
		`"\ud83d\ude00"`,
		`[{},{"a":[1,2,{"b":0}]}]`,
	}
	for _, c := range cases {
		v, err := Parse([]byte(c))
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		out := v.Marshal()
		var a, b any
		if err := json.Unmarshal([]byte(c), &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("%s: output %s invalid: %v", c, out, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("round trip of %s gave %s", c, out)
		}
	}
	v, _ := Parse([]byte(`{"value":1.50}`))
	if got := string(v.Marshal()); got != `{"value":1.50}` {
		t.Errorf("decimal precision lost: %s", got)
	}
}

func TestErrors(t *testing.T) {
	bad := map[string]string{
		`{"a":1,"a":2}`:           "duplicate member",
		`{"a":01}`:                "expected ','",
		`{"a":1.}`:                "no digits",
		`[1,2`:                    "end of input",
		`{"a":"x` + "\x01" + `"}`: "control character",
		`{"a":1} x`:               "after the value",
		`"\x"`:                    "invalid escape",
		"\"\xff\"":                "UTF-8",
	}
	for in, want := range bad {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, want)
		}
	}
	deep := strings.Repeat("[", MaxDepth+2) + strings.Repeat("]", MaxDepth+2)
	if _, err := Parse([]byte(deep)); err == nil {
		t.Error("deep nesting accepted")
	}
}

func TestCanonicalAndEqual(t *testing.T) {
	a, _ := Parse([]byte(`{"b":1,"a":{"y":[1,2],"x":"s"}}`))
	b, _ := Parse([]byte(`{"a":{"x":"s","y":[1,2]},"b":1}`))
	if !Equal(a, b) {
		t.Error("Equal ignores member order")
	}
	if string(a.AppendCanonical(nil)) != string(b.AppendCanonical(nil)) {
		t.Error("canonical forms differ")
	}
	c, _ := Parse([]byte(`{"a":{"x":"s","y":[2,1]},"b":1}`))
	if Equal(a, c) {
		t.Error("array order must matter")
	}
}

func TestSetAfter(t *testing.T) {
	v, _ := Parse([]byte(`{"resourceType":"Patient","id":"1","active":true}`))
	v.SetAfter("meta", NewObject(Field{"versionId", NewString("1")}), "id", "resourceType")
	if got := string(v.Marshal()); got != `{"resourceType":"Patient","id":"1","meta":{"versionId":"1"},"active":true}` {
		t.Error(got)
	}
}

func specExamples(tb testing.TB) [][]byte {
	dir := "../../../shared/data/r4-spec-examples"
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		tb.Skip("../shared/data/r4-spec-examples not found; skipping")
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestSpecExamples(t *testing.T) {
	for _, b := range specExamples(t) {
		v, err := Parse(b)
		if err != nil {
			t.Fatalf("%.80s: %v", b, err)
		}
		var x, y any
		_ = json.Unmarshal(b, &x)
		if err := json.Unmarshal(v.Marshal(), &y); err != nil || !reflect.DeepEqual(x, y) {
			t.Fatalf("round trip differs for %.80s", b)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	ex := specExamples(b)
	total := 0
	for _, e := range ex {
		total += len(e)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, e := range ex {
			if _, err := Parse(e); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkStdlibUnmarshal(b *testing.B) {
	ex := specExamples(b)
	total := 0
	for _, e := range ex {
		total += len(e)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, e := range ex {
			var v any
			if err := json.Unmarshal(e, &v); err != nil {
				b.Fatal(err)
			}
		}
	}
}
