package zipaes

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// sharedNDJSON is the FHIR NDJSON test set beside the repository (10 Synthea
// patients, 23 files, about 11 MB).
const sharedNDJSON = "../../../shared/data/derived-ndjson-blaze-10"

// loadNDJSON returns the shared NDJSON files by name, or skips the benchmark.
func loadNDJSON(b *testing.B) ([]string, map[string][]byte, int64) {
	b.Helper()
	paths, err := filepath.Glob(filepath.Join(sharedNDJSON, "*.ndjson"))
	if err != nil || len(paths) == 0 {
		b.Skipf("shared test data %s not found: skipping the FHIR NDJSON benchmark", sharedNDJSON)
	}
	files := map[string][]byte{}
	var names []string
	var total int64
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		name := filepath.Base(p)
		names = append(names, name)
		files[name] = data
		total += int64(len(data))
	}
	return names, files, total
}

// BenchmarkWriteNDJSON measures export throughput: the shared NDJSON files, one
// entry each, written to io.Discard. MB/s counts uncompressed input.
func BenchmarkWriteNDJSON(b *testing.B) {
	names, files, total := loadNDJSON(b)
	for _, c := range []struct {
		name  string
		pass  string
		level int
	}{
		{"aes/default", testPass, DefaultLevel},
		{"aes/level2", testPass, 2},
		{"aes/level6", testPass, 6},
		{"plain/default", "", DefaultLevel},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(total)
			var size int64
			for b.Loop() {
				cw := &countingWriter{}
				w := NewWriter(cw, c.pass)
				if err := w.SetLevel(c.level); err != nil {
					b.Fatal(err)
				}
				for _, n := range names {
					ew, err := w.Create(n)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := ew.Write(files[n]); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				size = cw.n
			}
			b.ReportMetric(float64(size)/float64(total), "ratio")
		})
	}
}

// BenchmarkReadNDJSON measures import throughput from an encrypted archive of the
// shared NDJSON files: decrypt, inflate, verify every entry.
func BenchmarkReadNDJSON(b *testing.B) {
	names, files, total := loadNDJSON(b)
	var buf bytes.Buffer
	w := NewWriter(&buf, testPass)
	for _, n := range names {
		ew, err := w.Create(n)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ew.Write(files[n]); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	archive := buf.Bytes()
	b.SetBytes(total)
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(archive), int64(len(archive)), testPass)
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range r.File {
			rc, err := f.Open()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				b.Fatal(err)
			}
			rc.Close()
		}
	}
}

// BenchmarkKeyDerivation is the fixed cost of each encrypted entry: PBKDF2 with
// 1000 iterations of HMAC-SHA1 for 66 bytes of keys.
func BenchmarkKeyDerivation(b *testing.B) {
	salt := randomBytes(9, 16)
	for b.Loop() {
		if _, err := deriveKeys(testPass, salt, 32); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncryptStore is the cipher and HMAC alone (Store, incompressible data).
func BenchmarkEncryptStore(b *testing.B) {
	data := randomBytes(10, 8<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		w := NewWriter(io.Discard, testPass)
		ew, err := w.CreateHeader(&FileHeader{Name: "scan.dcm", Method: Store})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ew.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
