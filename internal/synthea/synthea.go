// Package synthea loads the shared Synthea test data
// (../shared/data/synthea-120-bundles: 120 patients as gzipped transaction
// Bundles plus two batch Bundles of hospitals and practitioners that must
// come first) into a running record service. Tests and benchmarks of every
// feature use it, so that "the 120 Synthea patients" means one thing.
package synthea

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/records"
)

// Dir is the data directory relative to the repository root.
const Dir = "shared/data/synthea-120-bundles"

// Find locates the Synthea directory by walking up from the working
// directory (tests run in their package directory); "" when absent.
func Find() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "..", Dir)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return filepath.Clean(p)
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Files returns the bundle files in load order: the two batch Bundles
// (hospitals, practitioners) first, then the patients sorted by name.
// With patients > 0 only that many patient bundles are returned.
func Files(dir string, patients int) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(dir, "*.json.gz"))
	if err != nil {
		return nil, err
	}
	var first, rest []string
	for _, f := range all {
		if strings.HasPrefix(filepath.Base(f), "0-") {
			first = append(first, f)
		} else {
			rest = append(rest, f)
		}
	}
	sort.Slice(first, func(i, j int) bool {
		// hospitalInformation before practitionerInformation: practitioner
		// roles point at the hospitals' organizations.
		return first[i] < first[j]
	})
	sort.Strings(rest)
	if patients > 0 && patients < len(rest) {
		rest = rest[:patients]
	}
	if len(first) == 0 && len(rest) == 0 {
		return nil, fmt.Errorf("no Synthea bundles in %s", dir)
	}
	return append(first, rest...), nil
}

// ReadBundle reads and parses one gzipped Bundle.
func ReadBundle(path string) (*fhirjson.Value, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	v, err := fhirjson.Parse(data)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, int64(len(data)), nil
}

// Stats counts what a load did.
type Stats struct {
	Bundles   int
	Resources int
	Bytes     int64
}

// Load processes the bundles through the record service's transaction and
// batch path (with full access) and counts the resources written. The
// bundles are processed one after the other, in order; the next one is
// read and parsed meanwhile (gunzip and parse were 8% of the CPU of an
// in-process ingest, on the core the store's writing leaves idle).
func Load(ctx context.Context, rec *records.Service, files []string) (Stats, error) {
	ctx = access.With(ctx, access.System{Name: "synthea-loader"})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type read struct {
		b   *fhirjson.Value
		n   int64
		err error
	}
	next := make(chan read, 1)
	go func() {
		defer close(next)
		for _, f := range files {
			b, n, err := ReadBundle(f)
			select {
			case next <- read{b, n, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var st Stats
	for _, f := range files {
		r, ok := <-next
		if !ok {
			return st, ctx.Err()
		}
		if r.err != nil {
			return st, r.err
		}
		_, entries, err := rec.ProcessBundleTree(ctx, r.b, nil)
		if err != nil {
			return st, fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
		for i, e := range entries {
			if e.Outcome != nil {
				return st, fmt.Errorf("%s: entry %d: %v", filepath.Base(f), i, e.Outcome)
			}
		}
		st.Bundles++
		st.Resources += len(entries)
		st.Bytes += r.n
	}
	return st, nil
}

// Require returns the Synthea directory or skips the test.
func Require(t testing.TB) string {
	t.Helper()
	d := Find()
	if d == "" {
		t.Skip("../" + Dir + " not found; skipping")
	}
	return d
}
