package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates the tables from the shared definitions
// and compares them with the committed files: the output must be
// deterministic and the committed tables current.
func TestGeneratedUpToDate(t *testing.T) {
	src := "../../../../shared/fhir-r4"
	if _, err := os.Stat(filepath.Join(src, "profiles-resources.json")); err != nil {
		t.Skipf("FHIR definitions not present at %s (%v); they live beside the repository in ../shared/fhir-r4", src, err)
	}
	out := t.TempDir()
	if err := run(src, out); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(out, "zz_*.go"))
	if len(files) != 3 {
		t.Fatalf("generator wrote %d files, want 3", len(files))
	}
	for _, f := range files {
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(filepath.Join("..", filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, committed) {
			t.Errorf("%s differs from a fresh run: run go generate ./internal/r4", filepath.Base(f))
		}
	}
}

// The corrections must fail loudly when they no longer match the input.
func TestCorrectionsCheckInput(t *testing.T) {
	sds := []rawSD{{ID: "Meta", Snapshot: struct {
		Element []rawElement `json:"element"`
	}{Element: []rawElement{{Path: "Meta"}, {Path: "Meta.id"}}}}}
	if err := correct(sds); err == nil {
		t.Fatal("corrections applied to input that lacks the elements they drop")
	}
}
