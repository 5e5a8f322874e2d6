package index

import (
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
)

// sharedData returns the path of a file or folder under ../shared/data,
// skipping the test when the shared data is not there.
func sharedData(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", "..", "shared", "data", rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared test data %s is not available (%v): skipping", rel, err)
	}
	return p
}

func readResource(t testing.TB, rel string) *fhirjson.Value {
	t.Helper()
	data, err := os.ReadFile(sharedData(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	v, err := fhirjson.Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return v
}

// readBundle returns the resources of a gzipped Synthea transaction
// Bundle with their urn:uuid references rewritten to Type/id, as the
// server's transaction processing does before a resource is stored and
// indexed.
func readBundle(t testing.TB, path string) []*fhirjson.Value {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := fhirjson.Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	local := map[string]string{}
	var out []*fhirjson.Value
	for _, e := range b.Get("entry").Items {
		r := e.Get("resource")
		if u := e.GetString("fullUrl"); strings.HasPrefix(u, "urn:uuid:") {
			local[u] = r.GetString("resourceType") + "/" + r.GetString("id")
		}
		out = append(out, r)
	}
	for _, r := range out {
		rewriteRefs(r, local)
	}
	return out
}

func rewriteRefs(v *fhirjson.Value, local map[string]string) {
	switch v.Kind {
	case fhirjson.Object:
		for _, f := range v.Fields {
			if f.Name == "reference" && f.Value.Kind == fhirjson.String {
				if rel, ok := local[f.Value.Str]; ok {
					f.Value.Str = rel
				}
				continue
			}
			rewriteRefs(f.Value, local)
		}
	case fhirjson.Array:
		for _, it := range v.Items {
			rewriteRefs(it, local)
		}
	}
}

// find returns the resource with the given id.
func find(t testing.TB, rs []*fhirjson.Value, id string) *fhirjson.Value {
	t.Helper()
	for _, r := range rs {
		if r.GetString("id") == id {
			return r
		}
	}
	t.Fatalf("no resource %s in the bundle", id)
	return nil
}

func instant(us int64) string {
	switch us {
	case math.MinInt64:
		return "-inf"
	case math.MaxInt64:
		return "+inf"
	}
	return time.UnixMicro(us).UTC().Format("2006-01-02T15:04:05.999999Z")
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func showToken(x Token) string {
	s := x.System + "|" + x.Code
	if x.Text != "" {
		s += " text=" + x.Text
	}
	if x.TypeSystem != "" || x.TypeCode != "" {
		s += " type=" + x.TypeSystem + "|" + x.TypeCode
	}
	return s
}

func showString(x String) string { return x.Norm + " / " + x.Exact }

func showDate(x Date) string { return instant(x.Low) + " .. " + instant(x.High) }

func showRef(x Ref) string {
	var parts []string
	if x.Type != "" || x.ID != "" {
		parts = append(parts, x.Type+"/"+x.ID)
	}
	if x.Version != "" {
		parts = append(parts, "v="+x.Version)
	}
	if x.URL != "" {
		parts = append(parts, "url="+x.URL)
	}
	if x.IdentifierSystem != "" || x.IdentifierValue != "" {
		parts = append(parts, "identifier="+x.IdentifierSystem+"|"+x.IdentifierValue)
	}
	return strings.Join(parts, " ")
}

func showQuantity(x Quantity) string {
	return fmt.Sprintf("%s [%s, %s) %s|%s unit=%s text=%s", num(x.Value), num(x.Low), num(x.High), x.System, x.Code, x.Unit, x.Text)
}

func showNumber(x Number) string {
	return fmt.Sprintf("%s [%s, %s) text=%s", num(x.Value), num(x.Low), num(x.High), x.Text)
}

func showPart(p CompositePart) string {
	switch {
	case p.Token != nil:
		return showToken(*p.Token)
	case p.String != nil:
		return showString(*p.String)
	case p.Date != nil:
		return showDate(*p.Date)
	case p.Ref != nil:
		return showRef(*p.Ref)
	case p.Quantity != nil:
		return showQuantity(*p.Quantity)
	case p.Number != nil:
		return showNumber(*p.Number)
	case p.URI != nil:
		return p.URI.Value
	}
	return "(empty part)"
}

// show renders the entries of one parameter, one line each, in the order
// extracted.
func show(e *Entries, param string) []string {
	var out []string
	for _, x := range e.Tokens {
		if x.Param == param {
			out = append(out, showToken(x))
		}
	}
	for _, x := range e.Strings {
		if x.Param == param {
			out = append(out, showString(x))
		}
	}
	for _, x := range e.Dates {
		if x.Param == param {
			out = append(out, showDate(x))
		}
	}
	for _, x := range e.Refs {
		if x.Param == param {
			out = append(out, showRef(x))
		}
	}
	for _, x := range e.Quantities {
		if x.Param == param {
			out = append(out, showQuantity(x))
		}
	}
	for _, x := range e.Numbers {
		if x.Param == param {
			out = append(out, showNumber(x))
		}
	}
	for _, x := range e.URIs {
		if x.Param == param {
			out = append(out, x.Value)
		}
	}
	for _, x := range e.Composites {
		if x.Param == param {
			var ps []string
			for _, p := range x.Parts {
				ps = append(ps, showPart(p))
			}
			out = append(out, strings.Join(ps, " $ "))
		}
	}
	return out
}

// params lists the parameters with entries, in first-seen order.
func params(e *Entries) []string {
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, x := range e.Tokens {
		add(x.Param)
	}
	for _, x := range e.Strings {
		add(x.Param)
	}
	for _, x := range e.Dates {
		add(x.Param)
	}
	for _, x := range e.Refs {
		add(x.Param)
	}
	for _, x := range e.Quantities {
		add(x.Param)
	}
	for _, x := range e.Numbers {
		add(x.Param)
	}
	for _, x := range e.URIs {
		add(x.Param)
	}
	for _, x := range e.Composites {
		add(x.Param)
	}
	return out
}

// expect compares the entries of each parameter named in want (and checks
// that no other parameter has entries).
func expect(t *testing.T, e *Entries, want map[string][]string) {
	t.Helper()
	for p, w := range want {
		got := show(e, p)
		if strings.Join(got, "\n") != strings.Join(w, "\n") {
			t.Errorf("parameter %s:\n got:\n\t%s\nwant:\n\t%s", p, strings.Join(got, "\n\t"), strings.Join(w, "\n\t"))
		}
	}
	for _, p := range params(e) {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected entries for parameter %s:\n\t%s", p, strings.Join(show(e, p), "\n\t"))
		}
	}
}

// dump prints all entries in the form expect takes, to write new tests.
func dump(e *Entries) string {
	var b strings.Builder
	for _, p := range params(e) {
		fmt.Fprintf(&b, "%q: {\n", p)
		for _, s := range show(e, p) {
			fmt.Fprintf(&b, "\t%q,\n", s)
		}
		b.WriteString("},\n")
	}
	return b.String()
}

// expectSome compares the entries of the parameters named in want only.
func expectSome(t *testing.T, e *Entries, want map[string][]string) {
	t.Helper()
	for p, w := range want {
		got := show(e, p)
		if strings.Join(got, "\n") != strings.Join(w, "\n") {
			t.Errorf("parameter %s:\n got:\n\t%s\nwant:\n\t%s", p, strings.Join(got, "\n\t"), strings.Join(w, "\n\t"))
		}
	}
}

// mustExtract extracts the entries of r with those of its type's alias
// parameters too (which Extract leaves out: see Alias), so that the
// hand-checked tests show what each parameter yields.
func mustExtract(t *testing.T, r *fhirjson.Value) *Entries {
	t.Helper()
	e, err := extractAll(r.GetString("resourceType"), r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// extractAll extracts the entries of every parameter of res's type,
// aliases included.
func extractAll(rt string, res *fhirjson.Value) (*Entries, error) {
	x, err := For(rt)
	if err != nil {
		return nil, err
	}
	var e Entries
	err = x.appendParams(&e, res, slices.Concat(x.params, x.aliasParams))
	return &e, err
}
