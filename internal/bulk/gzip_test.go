package bulk

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"testing"
)

// TestChunkedGzip checks that a file compressed chunk by chunk is one
// valid gzip stream for the standard library and the gzip tool, with the
// right CRC and length, and that it still compresses.
func TestChunkedGzip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var want bytes.Buffer
	for i := 0; want.Len() < 1<<20; i++ {
		fmt.Fprintf(&want, `{"resourceType":"Observation","id":"%d","valueQuantity":{"value":%d.%d}}`+"\n", i, rng.IntN(300), rng.IntN(10))
	}
	// Incompressible bytes too, and chunks of uneven sizes.
	noise := make([]byte, 100<<10)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	want.Write(noise)
	for _, tc := range []struct {
		name   string
		data   []byte
		chunks []int
	}{
		{"empty", nil, nil},
		{"one byte", []byte("x"), []int{1}},
		{"records", want.Bytes(), []int{64 << 10, 1, 3000, 64 << 10, 128 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			g := &chunkedGzip{w: &out}
			rest := tc.data
			for i := 0; len(rest) > 0; i++ {
				n := min(len(rest), tc.chunks[i%len(tc.chunks)])
				if err := g.writeChunk(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			if err := g.close(); err != nil {
				t.Fatal(err)
			}
			zr, err := gzip.NewReader(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			zr.Multistream(false) // one member, not several
			got, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("decompress: %v", err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("decompressed %d bytes, want %d (equal prefix: %v)", len(got), len(tc.data), bytes.HasPrefix(tc.data, got))
			}
			if len(tc.data) > 1<<20 && out.Len() > len(tc.data)/2 {
				t.Errorf("compressed %d bytes to %d", len(tc.data), out.Len())
			}
			if path, err := exec.LookPath("gzip"); err == nil {
				cmd := exec.Command(path, "-dc")
				cmd.Stdin = bytes.NewReader(out.Bytes())
				dec, err := cmd.Output()
				if err != nil {
					t.Fatalf("gzip -dc: %v", err)
				}
				if !bytes.Equal(dec, tc.data) {
					t.Fatalf("gzip -dc gave %d bytes, want %d", len(dec), len(tc.data))
				}
			}
		})
	}
}

// TestChunkedGzipCorruptTrailer checks that the trailer is checked: a
// wrong CRC must fail the standard reader (so it is really written).
func TestChunkedGzipCorruptTrailer(t *testing.T) {
	var out bytes.Buffer
	g := &chunkedGzip{w: &out}
	if err := g.writeChunk([]byte("hello, world\n")); err != nil {
		t.Fatal(err)
	}
	if err := g.close(); err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	b[len(b)-8] ^= 0xff
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(zr); err == nil {
		t.Fatal("a wrong CRC was not noticed")
	}
}
