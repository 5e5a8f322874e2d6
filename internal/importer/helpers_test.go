package importer_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/synthea"
)

func gunzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func unzipEntry(t testing.TB, zb []byte, name string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(zb), int64(len(zb)))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := zr.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return b
}

// attID is the Binary id the importer gives an attachment's bytes.
func attID(b []byte) string {
	sum := sha256.Sum256(b)
	return "att-" + hex.EncodeToString(sum[:])[:40]
}

// syntheaNDJSON writes the resources of the Synthea bundles as NDJSON, the
// way a Bulk Data export of them would look: one resource per line,
// urn:uuid: references turned into Type/id (conditional references to the
// shared practitioners and organizations stay conditional).
func syntheaNDJSON(t testing.TB, files []string, w io.Writer) int {
	t.Helper()
	n := 0
	bw := bufio.NewWriterSize(w, 1<<20)
	for _, f := range files {
		b, _, err := synthea.ReadBundle(f)
		if err != nil {
			t.Fatal(err)
		}
		refs := map[string]string{}
		entries := b.Get("entry")
		for _, e := range entries.Items {
			res := e.Get("resource")
			refs[e.GetString("fullUrl")] = res.GetString("resourceType") + "/" + res.GetString("id")
		}
		for _, e := range entries.Items {
			res := e.Get("resource")
			rewriteURNs(res, refs)
			bw.Write(res.Marshal())
			bw.WriteByte('\n')
			n++
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return n
}

func rewriteURNs(v *fhirjson.Value, refs map[string]string) {
	switch v.Kind {
	case fhirjson.Object:
		for i := range v.Fields {
			f := &v.Fields[i]
			if f.Name == "reference" && f.Value.Kind == fhirjson.String {
				if r, ok := refs[f.Value.Str]; ok {
					f.Value = fhirjson.NewString(r)
				}
				continue
			}
			rewriteURNs(f.Value, refs)
		}
	case fhirjson.Array:
		for _, x := range v.Items {
			rewriteURNs(x, refs)
		}
	}
}

// checkRefTargets fails t when a reference row names by rid
// (target_rid) a resource other than its target: every chunk that names
// another chunk's resources by rid must commit only with it, whatever the
// races and retries of the import.
func checkRefTargets(t testing.TB, db *sqldb.DB) {
	t.Helper()
	var bad, byRid int
	err := db.QueryRow(context.Background(), `SELECT
		COALESCE(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM resource r WHERE r.rid = x.target_rid AND r.type = x.target_type AND r.id = x.target_id) THEN 1 ELSE 0 END), 0),
		COUNT(*) FROM idx_ref x WHERE x.target_rid <> 0`).Scan(&bad, &byRid)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Errorf("%d of %d reference rows name a target by the rid of another resource (or none)", bad, byRid)
	}
}
