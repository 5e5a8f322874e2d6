package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// testScanReferences checks ScanReferences over several pages, with a
// resource whose references fill more than a page, a deleted resource
// and another parameter left out; then Reindex, which replaces a current
// version's index and compartment rows without writing a version.
func testScanReferences(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	const param = "_securityContext"
	want := map[string]bool{}
	err := s.Write(ctx, func(tx store.Tx) error {
		for i := range 1203 {
			id := fmt.Sprintf("b%04d", i)
			p := put("Binary", id, 1, `{}`, t0)
			p.Index = &index.Entries{Refs: []index.Ref{{Param: param, Type: "Patient", ID: fmt.Sprint("p", i%3)}, {Param: "other", Type: "Patient", ID: "x"}}}
			if err := tx.Put(ctx, p); err != nil {
				return err
			}
			want[id+" Patient/"+fmt.Sprint("p", i%3)] = true
		}
		p := put("Binary", "many", 1, `{}`, t0)
		p.Index = &index.Entries{}
		for i := range 700 {
			p.Index.Refs = append(p.Index.Refs, index.Ref{Param: param, Type: "Observation", ID: fmt.Sprint("o", i)})
			want["many Observation/"+fmt.Sprint("o", i)] = true
		}
		p.Index.Refs = append(p.Index.Refs, index.Ref{Param: param, URL: "http://elsewhere.example/fhir/Patient/z", Type: "Patient"})
		want["many http://elsewhere.example/fhir/Patient/z"] = true
		if err := tx.Put(ctx, p); err != nil {
			return err
		}
		p = put("Binary", "gone", 1, `{}`, t0)
		p.Index = &index.Entries{Refs: []index.Ref{{Param: param, Type: "Patient", ID: "p0"}}}
		return tx.Put(ctx, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, func(tx store.Tx) error {
		p := put("Binary", "gone", 2, `{}`, t0)
		p.Deleted = true
		return tx.Put(ctx, p)
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	if err := s.ScanReferences(ctx, "Binary", param, func(id, ref string) bool {
		k := id + " " + ref
		if got[k] {
			t.Errorf("%s twice", k)
		}
		got[k] = true
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for k := range want {
		if !got[k] {
			t.Errorf("missing %s", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("unexpected %s", k)
		}
	}
	n := 0
	if err := s.ScanReferences(ctx, "Binary", param, func(string, string) bool { n++; return n < 10 }); err != nil || n != 10 {
		t.Errorf("stopped after %d calls (%v), want 10", n, err)
	}
	if err := s.ScanReferences(ctx, "Binary", "never-indexed", func(string, string) bool { t.Error("a row"); return true }); err != nil {
		t.Error(err)
	}

	// Reindex b0000 to name Patient/q, in q's compartment.
	err = s.Write(ctx, func(tx store.Tx) error {
		cur, err := tx.Current(ctx, "Binary", "b0000")
		if err != nil {
			return err
		}
		rx := tx.(store.Reindexer)
		stale := *cur
		stale.Version--
		if err := rx.Reindex(ctx, &stale, &index.Entries{}, nil); err == nil {
			t.Error("Reindex of a version that is not the current one: no error")
		}
		return rx.Reindex(ctx, cur, &index.Entries{Refs: []index.Ref{{Param: param, Type: "Patient", ID: "q"}}}, []string{"q"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	if err := s.ScanReferences(ctx, "Binary", param, func(id, ref string) bool {
		if id == "b0000" {
			refs = append(refs, ref)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 || refs[0] != "Patient/q" {
		t.Errorf("b0000 after Reindex: %v, want [Patient/q]", refs)
	}
	if pats, err := s.Compartments(ctx, "Binary", "b0000"); err != nil || len(pats) != 1 || pats[0] != "q" {
		t.Errorf("compartments of b0000 after Reindex: %v %v", pats, err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM idx_ref x JOIN resource r ON r.rid = x.rid WHERE r.id = ?`, "b0000"); n != 1 {
		t.Errorf("b0000 has %d reference rows after Reindex, want 1 (the other parameter's row is gone too)", n)
	}
	if res, err := s.Read(ctx, "Binary", "b0000"); err != nil || res.Version != 1 {
		t.Errorf("b0000 after Reindex: version %v %v, want 1", res, err)
	}
}
