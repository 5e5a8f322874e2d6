package zipaes

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/aes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const testPass = "k7mp-3xq9-wd4t-hn8e-ua2c-rf6v"

// testEntry is one entry to write and expect back.
type testEntry struct {
	name   string
	data   []byte
	method uint16
}

// randomBytes returns n incompressible bytes, the same for the same seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// ndjsonBytes returns about n bytes of FHIR-like NDJSON: compressible, but not
// trivially (numbers and ids vary per line).
func ndjsonBytes(n int) []byte {
	r := rand.New(rand.NewPCG(7, 11))
	var b []byte
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, `{"resourceType":"Observation","id":"obs-%d","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"%d-%d"}]},"subject":{"reference":"Patient/p%d"},"effectiveDateTime":"20%02d-%02d-%02d","valueQuantity":{"value":%d.%d,"unit":"mg/dL"}}`+"\n",
			i, r.IntN(90000), r.IntN(10), r.IntN(500), r.IntN(25), 1+r.IntN(12), 1+r.IntN(28), r.IntN(400), r.IntN(100))
	}
	return b
}

// writeArchive writes entries in uneven pieces, as a stream would, and returns the
// archive bytes.
func writeArchive(t testing.TB, pass string, entries []testEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, pass)
	for _, e := range entries {
		ew, err := w.CreateHeader(&FileHeader{Name: e.name, Method: e.method})
		if err != nil {
			t.Fatalf("create %q: %v", e.name, err)
		}
		for p := e.data; len(p) > 0; {
			n := min(len(p), 7777)
			if _, err := ew.Write(p[:n]); err != nil {
				t.Fatalf("write %q: %v", e.name, err)
			}
			p = p[n:]
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return buf.Bytes()
}

// readEntry opens name and reads it to the end, returning the data and the error
// that ended the read (nil for a clean io.EOF).
func readEntry(t testing.TB, r *Reader, name string) ([]byte, error) {
	t.Helper()
	rc, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func checkRoundTrip(t *testing.T, pass string, entries []testEntry) []byte {
	t.Helper()
	archive := writeArchive(t, pass, entries)
	r, err := NewReader(bytes.NewReader(archive), int64(len(archive)), pass)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	if len(r.File) != len(entries) {
		t.Fatalf("archive lists %d entries, wrote %d", len(r.File), len(entries))
	}
	for i, e := range entries {
		f := r.File[i]
		if f.Name != e.name {
			t.Errorf("entry %d is %q, want %q", i, f.Name, e.name)
		}
		isDir := strings.HasSuffix(e.name, "/")
		if want := pass != "" && !isDir; f.Encrypted != want {
			t.Errorf("entry %q: Encrypted = %v, want %v", e.name, f.Encrypted, want)
		}
		if f.Size != uint64(len(e.data)) {
			t.Errorf("entry %q: Size = %d, want %d", e.name, f.Size, len(e.data))
		}
		if time.Since(f.Modified) > time.Hour || f.Modified.After(time.Now().Add(time.Second)) {
			t.Errorf("entry %q: Modified = %v, want about now", e.name, f.Modified)
		}
		got, err := readEntry(t, r, e.name)
		if err != nil {
			t.Fatalf("read %q: %v", e.name, err)
		}
		if !bytes.Equal(got, e.data) {
			t.Errorf("entry %q: read %d bytes that differ from the %d written", e.name, len(got), len(e.data))
		}
	}
	return archive
}

func TestRoundTrip(t *testing.T) {
	entries := []testEntry{
		{"empty.txt", nil, Deflate},
		{"empty-stored.bin", nil, Store},
		{"small.json", []byte(`{"resourceType":"Patient","id":"p1"}`), Deflate},
		{"one-byte", []byte{0}, Deflate},
		{"incompressible.bin", randomBytes(1, 3<<20+13), Deflate},
		{"incompressible-stored.jpg", randomBytes(2, 2<<20+1), Store},
		{"compressible.ndjson", ndjsonBytes(5 << 20), Deflate},
		{"dir/", nil, Store},
		{"dir/Zoë Ångström/Müller–Lüdenscheid 患者記録.phr", []byte("utf-8 names\n"), Deflate},
	}
	for _, mode := range []struct{ name, pass string }{{"aes", testPass}, {"plain", ""}} {
		t.Run(mode.name, func(t *testing.T) {
			archive := checkRoundTrip(t, mode.pass, entries)
			if mode.pass != "" {
				for _, e := range entries {
					if len(e.data) > 1000 && bytes.Contains(archive, e.data[:1000]) {
						t.Errorf("entry %q: plaintext appears in the encrypted archive", e.name)
					}
				}
			}
		})
	}
}

// TestManyEntries writes hundreds of encrypted entries (each has its own salt and
// keys) and checks every one reads back as itself.
func TestManyEntries(t *testing.T) {
	var entries []testEntry
	for i := range 300 {
		entries = append(entries, testEntry{fmt.Sprintf("p%03d/Patient-%d.ndjson", i/50, i), fmt.Appendf(nil, "line %d\n", i), Deflate})
	}
	archive := checkRoundTrip(t, testPass, entries)
	// Each entry must have its own salt: a repeated salt would repeat the keystream.
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}
	salts := map[string]string{}
	for _, zf := range zr.File {
		off, err := zf.DataOffset()
		if err != nil {
			t.Fatal(err)
		}
		salt := string(archive[off : off+16])
		if other, dup := salts[salt]; dup {
			t.Fatalf("entries %q and %q share a salt", other, zf.Name)
		}
		salts[salt] = zf.Name
	}
}

// TestZip64Count writes more entries than the classic end record can count, so the
// archive needs ZIP64 end records, and reads them all back.
func TestZip64Count(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 70,000 entries")
	}
	const n = 70_000
	var buf bytes.Buffer
	w := NewWriter(&buf, "")
	for i := range n {
		ew, err := w.Create(fmt.Sprintf("e/%05d", i))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(ew, "%d", i)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	if !bytes.Contains(archive[len(archive)-200:], []byte("PK\x06\x06")) {
		t.Error("no ZIP64 end of central directory record in an archive of 70,000 entries")
	}
	r, err := NewReader(bytes.NewReader(archive), int64(len(archive)), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.File) != n {
		t.Fatalf("read %d entries, wrote %d", len(r.File), n)
	}
	for _, i := range []int{0, 65_535, 65_536, n - 1} {
		got, err := readEntry(t, r, fmt.Sprintf("e/%05d", i))
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Errorf("entry %d: got %q, %v", i, got, err)
		}
	}
}

// TestMixedArchive reads an archive holding both encrypted and plain entries, as
// other tools may produce: the plain ones need no passphrase.
func TestMixedArchive(t *testing.T) {
	enc := writeArchive(t, testPass, []testEntry{{"secret.json", []byte(`{"secret":true}`), Deflate}})
	plain := writeArchive(t, "", []testEntry{{"readme.txt", []byte("not secret\n"), Deflate}})
	mixed := mixArchives(t, enc, plain)

	r, err := NewReader(bytes.NewReader(mixed), int64(len(mixed)), testPass)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"secret.json": `{"secret":true}`, "readme.txt": "not secret\n"} {
		got, err := readEntry(t, r, name)
		if err != nil || string(got) != want {
			t.Errorf("with passphrase, %q: got %q, %v", name, got, err)
		}
	}

	r, err = NewReader(bytes.NewReader(mixed), int64(len(mixed)), "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readEntry(t, r, "readme.txt"); err != nil || string(got) != "not secret\n" {
		t.Errorf("without passphrase, plain entry: got %q, %v", got, err)
	}
	if _, err := readEntry(t, r, "secret.json"); !errors.Is(err, ErrPassphraseRequired) {
		t.Errorf("without passphrase, encrypted entry: got %v, want ErrPassphraseRequired", err)
	}
}

// mixArchives copies the raw entries of several archives into one with archive/zip.
func mixArchives(t testing.TB, archives ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, a := range archives {
		zr, err := zip.NewReader(bytes.NewReader(a), int64(len(a)))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range zr.File {
			if err := zw.Copy(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// checkWrongPassphrase opens every encrypted entry of r, which was opened with a
// wrong passphrase. Each must fail at Open with ErrWrongPassphrase, except that the
// 2-byte verifier lets one wrong passphrase in 65,536 through: such an entry must
// then fail at the end of its data with ErrAuthentication. More than one such
// entry in a test would be a one-in-a-billion accident, so it is an error.
func checkWrongPassphrase(t *testing.T, r *Reader) {
	t.Helper()
	passed := 0
	for _, f := range r.File {
		if !f.Encrypted {
			continue
		}
		rc, err := f.Open()
		if err == nil {
			passed++
			_, err = io.ReadAll(rc)
			rc.Close()
			if !errors.Is(err, ErrAuthentication) {
				t.Errorf("%q: a wrong passphrase passed the verifier and then read gave %v, want ErrAuthentication", f.Name, err)
			}
			continue
		}
		if !errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("%q: Open with a wrong passphrase: %v, want ErrWrongPassphrase", f.Name, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", f.Name)) {
			t.Errorf("error %q does not name the entry", err)
		}
	}
	if passed > 1 {
		t.Errorf("%d entries accepted a wrong passphrase at Open; the verifier is not checked", passed)
	}
}

func TestWrongPassphrase(t *testing.T) {
	var entries []testEntry
	for i := range 5 {
		entries = append(entries, testEntry{fmt.Sprintf("%d.json", i), []byte("{}"), Deflate})
	}
	archive := writeArchive(t, testPass, entries)
	r, err := NewReader(bytes.NewReader(archive), int64(len(archive)), "k7mp-3xq9-wd4t-hn8e-ua2c-rf6w")
	if err != nil {
		t.Fatal(err)
	}
	checkWrongPassphrase(t, r)

	r, err = NewReader(bytes.NewReader(archive), int64(len(archive)), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.File[0].Open(); !errors.Is(err, ErrPassphraseRequired) || errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Open without a passphrase: %v, want ErrPassphraseRequired only", err)
	}
}

// TestTamper changes single bytes of an encrypted entry and expects each change to
// be caught: in the ciphertext and the code by the HMAC, in the salt or verifier by
// the verifier (or, one time in 65,536, by the HMAC).
func TestTamper(t *testing.T) {
	for _, method := range []uint16{Deflate, Store} {
		data := ndjsonBytes(200 << 10)
		archive := writeArchive(t, testPass, []testEntry{{"obs.ndjson", data, method}})
		zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
		if err != nil {
			t.Fatal(err)
		}
		off, err := zr.File[0].DataOffset()
		if err != nil {
			t.Fatal(err)
		}
		size := int64(zr.File[0].CompressedSize64)
		cases := []struct {
			name string
			at   int64
			want []error
		}{
			{"first ciphertext byte", off + 18, []error{ErrAuthentication}},
			{"middle ciphertext byte", off + 18 + (size-28)/2, []error{ErrAuthentication}},
			{"last ciphertext byte", off + size - 11, []error{ErrAuthentication}},
			{"authentication code", off + size - 1, []error{ErrAuthentication}},
			{"salt", off + 3, []error{ErrWrongPassphrase, ErrAuthentication}},
			{"verifier", off + 16, []error{ErrWrongPassphrase}},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("method%d/%s", method, c.name), func(t *testing.T) {
				bad := bytes.Clone(archive)
				bad[c.at] ^= 0x20
				r, err := NewReader(bytes.NewReader(bad), int64(len(bad)), testPass)
				if err != nil {
					t.Fatal(err)
				}
				got, err := readEntry(t, r, "obs.ndjson")
				for _, want := range c.want {
					if errors.Is(err, want) {
						return
					}
				}
				t.Errorf("read after changing the %s: %d bytes, error %v; want one of %v", c.name, len(got), err, c.want)
			})
		}
	}
}

// TestTruncated cuts the archive short; it must fail clearly, not read garbage.
func TestTruncated(t *testing.T) {
	archive := writeArchive(t, testPass, []testEntry{{"a.ndjson", ndjsonBytes(100 << 10), Deflate}})
	for _, n := range []int{0, 10, len(archive) / 2, len(archive) - 1} {
		if _, err := NewReader(bytes.NewReader(archive[:n]), int64(n), testPass); err == nil {
			t.Errorf("archive cut to %d of %d bytes: NewReader succeeded", n, len(archive))
		}
	}
}

// TestDeclaredSize lowers the uncompressed size in the central directory: the reader
// must stop at the declared size (no zip bombs) and say so, never return io.EOF.
func TestDeclaredSize(t *testing.T) {
	data := ndjsonBytes(100 << 10)
	archive := writeArchive(t, testPass, []testEntry{{"a.ndjson", data, Deflate}})
	cd := bytes.LastIndex(archive, []byte("PK\x01\x02"))
	if cd < 0 {
		t.Fatal("no central directory header")
	}
	binary.LittleEndian.PutUint32(archive[cd+24:], uint32(len(data)-1000))
	r, err := NewReader(bytes.NewReader(archive), int64(len(archive)), testPass)
	if err != nil {
		t.Fatal(err)
	}
	_, err = readEntry(t, r, "a.ndjson")
	if err == nil || !strings.Contains(err.Error(), "declares") {
		t.Fatalf("read with a smaller declared size: %v, want an error about the declared size", err)
	}
}

// TestCounter checks the keystream against WinZip's definition computed directly:
// block i is AES(key, little-endian uint64(i+1) followed by 8 zero bytes).
func TestCounter(t *testing.T) {
	key := randomBytes(3, 32)
	c, err := newCTR(key)
	if err != nil {
		t.Fatal(err)
	}
	const blocks = 70 // more than one refill of 32 blocks
	got := make([]byte, blocks*16)
	// Consume in odd pieces so that refills happen mid-call.
	for p := got; len(p) > 0; {
		n := min(len(p), 37)
		c.xor(p[:n], p[:n])
		p = p[n:]
	}
	b, _ := aes.NewCipher(key)
	for i := range blocks {
		var ctrBlock, want [16]byte
		binary.LittleEndian.PutUint64(ctrBlock[:], uint64(i+1))
		b.Encrypt(want[:], ctrBlock[:])
		if !bytes.Equal(got[i*16:(i+1)*16], want[:]) {
			t.Fatalf("keystream block %d = %x, want %x", i, got[i*16:(i+1)*16], want)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	w := NewWriter(io.Discard, testPass)
	for _, name := range []string{"", "/abs", "a/../b", "a//b", `a\b`, "C:/x", "./a", "\xff"} {
		if _, err := w.Create(name); err == nil {
			t.Errorf("Create(%q) succeeded", name)
		}
	}
	if _, err := w.CreateHeader(&FileHeader{Name: "x.bz2", Method: 12}); err == nil {
		t.Error("CreateHeader with method 12 (bzip2) succeeded")
	}
	ew, err := w.Create("a.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Create("a.json"); err == nil {
		t.Error("a second entry named a.json was accepted")
	}
	if _, err := w.Create("b.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := ew.Write([]byte("late")); err == nil {
		t.Error("write to an entry after the next Create succeeded")
	}
	if err := w.SetLevel(1); err == nil {
		t.Error("SetLevel after the first entry succeeded")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Error("second Close succeeded")
	}
	if _, err := w.Create("c.json"); err == nil {
		t.Error("Create after Close succeeded")
	}
	if err := NewWriter(io.Discard, "").SetLevel(10); err == nil {
		t.Error("SetLevel(10) succeeded")
	}
}

// failWriter fails every write after the first limit bytes.
type failWriter struct{ limit int }

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		n := f.limit
		f.limit = 0
		return n, errors.New("disk full")
	}
	f.limit -= len(p)
	return len(p), nil
}

// TestWriterSinkError makes the destination fail mid-entry: the error must reach the
// caller and stick, so a broken archive is never reported as written.
func TestWriterSinkError(t *testing.T) {
	w := NewWriter(&failWriter{limit: 100 << 10}, testPass)
	ew, err := w.CreateHeader(&FileHeader{Name: "big.bin", Method: Store})
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(4, 1<<20)
	_, werr := ew.Write(data)
	cerr := w.Close()
	if werr == nil && cerr == nil {
		t.Fatal("writing 1 MiB to a sink that fails after 100 KiB reported no error")
	}
	if cerr == nil || !strings.Contains(cerr.Error(), "disk full") {
		t.Errorf("Close after a failed write: %v, want the sink's error", cerr)
	}
}

func TestUnsupportedMethodInsideAES(t *testing.T) {
	archive := writeArchive(t, testPass, []testEntry{{"a", []byte("x"), Deflate}})
	// Change the real method in both copies of the 0x9901 field to 14 (LZMA).
	field := appendAESExtra(nil, Deflate)
	n := bytes.Count(archive, field)
	if n != 2 {
		t.Fatalf("found the AES extra field %d times, want 2 (local and central)", n)
	}
	archive = bytes.ReplaceAll(archive, field, appendAESExtra(nil, 14))
	r, err := NewReader(bytes.NewReader(archive), int64(len(archive)), testPass)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.File[0].Open(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Open of AES entry with method 14: %v, want ErrUnsupported", err)
	}
}

func TestGeneratePassphrase(t *testing.T) {
	seen := map[string]bool{}
	counts := map[rune]int{}
	for range 2000 {
		p, err := GeneratePassphrase()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 29 {
			t.Fatalf("passphrase %q has %d characters, want 29", p, len(p))
		}
		if seen[p] {
			t.Fatalf("passphrase %q generated twice", p)
		}
		seen[p] = true
		for i, c := range p {
			if i%5 == 4 {
				if c != '-' {
					t.Fatalf("passphrase %q: character %d is %q, want a hyphen", p, i, c)
				}
				continue
			}
			if !strings.ContainsRune(passphraseAlphabet, c) {
				t.Fatalf("passphrase %q contains %q, outside the alphabet", p, c)
			}
			counts[c]++
		}
	}
	// 48,000 symbols over 31: each about 1,548 times. A symbol that never or
	// rarely shows up would mean a biased or broken draw.
	if len(counts) != len(passphraseAlphabet) {
		t.Errorf("%d distinct symbols used, want %d", len(counts), len(passphraseAlphabet))
	}
	for c, n := range counts {
		if n < 1300 || n > 1800 {
			t.Errorf("symbol %q drawn %d times of 48,000, want about 1,548", c, n)
		}
	}
	if strings.ContainsAny(passphraseAlphabet, "01oil") {
		t.Error("the alphabet contains a look-alike character")
	}
	// The documented entropy must follow from the shape.
	bits := float64(passphraseGroups*passphraseGroupSize) * math.Log2(float64(len(passphraseAlphabet)))
	if int(bits) != PassphraseBits || bits < 100 {
		t.Errorf("PassphraseBits = %d, the shape gives %.1f bits", PassphraseBits, bits)
	}
}

// TestZip64LargeEntry writes one encrypted entry of 4 GiB + 1 MiB, so that both its
// sizes need ZIP64, then reads it back and, when 7z is installed, has 7-Zip test it.
// It takes about two minutes and 4.3 GB of temporary disk, so it runs only when
// PHR_ZIPAES_LARGE=1.
func TestZip64LargeEntry(t *testing.T) {
	if os.Getenv("PHR_ZIPAES_LARGE") != "1" {
		t.Skip("set PHR_ZIPAES_LARGE=1 to write and read a 4 GiB encrypted entry")
	}
	const size = 4<<30 + 1<<20
	path := filepath.Join(t.TempDir(), "large.zip")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	w := NewWriter(bw, testPass)
	ew, err := w.CreateHeader(&FileHeader{Name: "large.bin", Method: Store})
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range size / len(chunk) {
		binary.LittleEndian.PutUint64(chunk, uint64(i)) // each MiB differs
		if _, err := ew.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if ew, err = w.Create("after.txt"); err != nil {
		t.Fatal(err)
	}
	io.WriteString(ew, "an entry after the large one, at an offset past 4 GiB\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(f, fi.Size(), testPass)
	if err != nil {
		t.Fatal(err)
	}
	if r.File[0].Size != size {
		t.Fatalf("large entry declares %d bytes, want %d", r.File[0].Size, size)
	}
	rc, err := r.Open("large.bin")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(rc, 1<<20)
	var n int64
	for i := 0; ; i++ {
		if _, err := io.ReadFull(br, chunk); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("read at %d: %v", n, err)
		}
		if got := binary.LittleEndian.Uint64(chunk); got != uint64(i) || !bytes.Equal(chunk[8:64], make([]byte, 56)) {
			t.Fatalf("MiB %d reads back wrong (starts %x)", i, chunk[:16])
		}
		n += int64(len(chunk))
	}
	rc.Close()
	if n != size {
		t.Fatalf("read %d bytes, want %d", n, size)
	}
	if got, err := readEntry(t, r, "after.txt"); err != nil || !bytes.HasPrefix(got, []byte("an entry after")) {
		t.Fatalf("after.txt: %q, %v", got, err)
	}
	if bin, err := exec.LookPath("7z"); err == nil {
		if out, err := run7z(t, bin, filepath.Dir(path), "t", path, "-p"+testPass); err != nil || !strings.Contains(out, "Everything is Ok") {
			t.Fatalf("7z t: %v\n%s", err, out)
		}
	}
}

// TestBoundedMemory streams a 64 MiB entry through the writer and the reader and
// checks that neither allocates anything near the entry's size: entries must never
// be buffered whole.
func TestBoundedMemory(t *testing.T) {
	chunk := ndjsonBytes(64 << 10)
	size := (64 << 20) / len(chunk) * len(chunk)
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	var archive bytes.Buffer
	archive.Grow(size / 4)
	capBefore := archive.Cap()
	writeAlloc := allocated(func() {
		w := NewWriter(&archive, testPass)
		ew, err := w.Create("big.ndjson")
		if err != nil {
			t.Fatal(err)
		}
		for range size / len(chunk) {
			if _, err := ew.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	})
	if archive.Cap() != capBefore {
		t.Fatalf("test setup: the archive outgrew its preallocated buffer (%d bytes)", archive.Len())
	}
	readAlloc := allocated(func() {
		r, err := NewReader(bytes.NewReader(archive.Bytes()), int64(archive.Len()), testPass)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := r.Open("big.ndjson")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		if err != nil || n != int64(size) {
			t.Fatalf("read %d bytes, %v; want %d", n, err, size)
		}
	})
	const limit = 8 << 20
	if writeAlloc > limit || readAlloc > limit {
		t.Errorf("streaming a %d MiB entry allocated %.1f MiB writing and %.1f MiB reading; want under %d MiB each",
			size>>20, float64(writeAlloc)/(1<<20), float64(readAlloc)/(1<<20), limit>>20)
	}
	t.Logf("64 MiB entry: %.1f MiB allocated writing, %.1f MiB reading", float64(writeAlloc)/(1<<20), float64(readAlloc)/(1<<20))
}

// TestAE1 reads AE-1 entries, whose CRC is stored and checked after the HMAC. 7-Zip
// and this package write AE-2, so the test turns one of ours into AE-1 by changing
// the vendor version and filling in the CRC.
func TestAE1(t *testing.T) {
	data := ndjsonBytes(50 << 10)
	ae2 := writeArchive(t, testPass, []testEntry{{"a.ndjson", data, Deflate}})
	ae1Field := appendAESExtra(nil, Deflate)
	binary.LittleEndian.PutUint16(ae1Field[4:], vendorAE1)
	base := bytes.ReplaceAll(ae2, appendAESExtra(nil, Deflate), ae1Field)
	cd := bytes.LastIndex(base, []byte("PK\x01\x02"))
	if cd < 0 {
		t.Fatal("no central directory header")
	}
	for _, c := range []struct {
		name string
		crc  uint32
		want error
	}{
		{"right CRC", crc32.ChecksumIEEE(data), nil},
		{"wrong CRC", crc32.ChecksumIEEE(data) ^ 1, zip.ErrChecksum},
	} {
		archive := bytes.Clone(base)
		binary.LittleEndian.PutUint32(archive[cd+16:], c.crc)
		r, err := NewReader(bytes.NewReader(archive), int64(len(archive)), testPass)
		if err != nil {
			t.Fatal(err)
		}
		if r.File[0].aes.vendor != vendorAE1 {
			t.Fatalf("%s: entry reads as vendor version %d, want AE-1", c.name, r.File[0].aes.vendor)
		}
		got, err := readEntry(t, r, "a.ndjson")
		if c.want == nil {
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s: %d bytes, %v", c.name, len(got), err)
			}
		} else if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
