package zipaes

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests check the format against an independent implementation, 7-Zip, in
// both directions. They skip when 7z is not installed (Debian: apt-get install
// p7zip-full).

func need7z(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("7z")
	if err != nil {
		t.Skip("7z not found: skipping 7-Zip interoperability tests (apt-get install -y p7zip-full)")
	}
	return p
}

// run7z runs 7z with args in dir and returns its combined output and error.
func run7z(t *testing.T, bin, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// interopEntries covers what an .sphr holds: JSON and NDJSON, an empty file, media
// stored as is, a directory and non-ASCII names.
func interopEntries() []testEntry {
	return []testEntry{
		{"WilliamSim/WilliamSim.phr", ndjsonBytes(2 << 20), Deflate},
		{"WilliamSim/xr-chest.jpg", randomBytes(5, 300<<10), Store},
		{"WilliamSim/notes/", nil, Store},
		{"WilliamSim/notes/empty.txt", nil, Deflate},
		{"WilliamSim/notes/Zoë Ångström 患者.json", []byte(`{"resourceType":"Patient","name":[{"family":"Ångström"}]}`), Deflate},
		{"random.bin", randomBytes(6, 1<<20), Deflate},
	}
}

func TestSevenZipOpensOurArchive(t *testing.T) {
	bin := need7z(t)
	for _, pass := range []string{testPass, "pässwörd-患者", ""} {
		t.Run("pass="+pass, func(t *testing.T) {
			dir := t.TempDir()
			entries := interopEntries()
			archive := filepath.Join(dir, "export.sphr")
			if err := os.WriteFile(archive, writeArchive(t, pass, entries), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"t", archive}
			if pass != "" {
				args = append(args, "-p"+pass)
			}
			out, err := run7z(t, bin, dir, args...)
			if err != nil || !strings.Contains(out, "Everything is Ok") {
				t.Fatalf("7z t: %v\n%s", err, out)
			}
			if pass != "" {
				out, _ := run7z(t, bin, dir, "l", "-slt", archive)
				if n := strings.Count(out, "Method = AES-256"); n != 5 {
					t.Errorf("7z l lists %d AES-256 entries, want 5\n%s", n, out)
				}
			}

			dest := filepath.Join(dir, "out")
			args = []string{"x", "-y", "-o" + dest, archive}
			if pass != "" {
				args = append(args, "-p"+pass)
			}
			if out, err := run7z(t, bin, dir, args...); err != nil {
				t.Fatalf("7z x: %v\n%s", err, out)
			}
			for _, e := range entries {
				path := filepath.Join(dest, filepath.FromSlash(e.name))
				if strings.HasSuffix(e.name, "/") {
					if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
						t.Errorf("7z did not extract directory %q: %v", e.name, err)
					}
					continue
				}
				got, err := os.ReadFile(path)
				if err != nil {
					t.Errorf("7z did not extract %q: %v", e.name, err)
					continue
				}
				if !bytes.Equal(got, e.data) {
					t.Errorf("7z extracted %q as %d bytes that differ from the %d written", e.name, len(got), len(e.data))
				}
			}

			if pass != "" {
				out, err := run7z(t, bin, dir, "t", archive, "-pwrong-passphrase")
				if err == nil || !strings.Contains(out, "Wrong password") {
					t.Errorf("7z t with a wrong passphrase: err %v, want a failure saying Wrong password\n%s", err, out)
				}
			}
		})
	}
}

// TestSevenZipMixed has 7-Zip test an archive holding both kinds of entry.
func TestSevenZipMixed(t *testing.T) {
	bin := need7z(t)
	dir := t.TempDir()
	mixed := mixArchives(t,
		writeArchive(t, testPass, []testEntry{{"secret.json", []byte(`{"secret":true}`), Deflate}}),
		writeArchive(t, "", []testEntry{{"readme.txt", []byte("not secret\n"), Deflate}}))
	archive := filepath.Join(dir, "mixed.zip")
	if err := os.WriteFile(archive, mixed, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run7z(t, bin, dir, "t", archive, "-p"+testPass); err != nil || !strings.Contains(out, "Everything is Ok") {
		t.Fatalf("7z t: %v\n%s", err, out)
	}
}

// TestReadSevenZipArchive reads archives that 7-Zip made, in each encryption it
// offers for zip. (7-Zip refuses to create zip archives with a non-ASCII password,
// E_INVALIDARG, though it opens ours; that direction is covered above.)
func TestReadSevenZipArchive(t *testing.T) {
	bin := need7z(t)
	src := t.TempDir()
	files := map[string][]byte{
		"Observation.ndjson":   ndjsonBytes(1 << 20),
		"empty.txt":            nil,
		"media/scan.dcm":       randomBytes(7, 200<<10),
		"media/Zoë 患者.json":    []byte(`{"resourceType":"Patient"}`),
		"media/deep/small.txt": []byte("x"),
	}
	for name, data := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		args []string // 7z a options
		pass string
		want error // from opening an encrypted entry with the right passphrase
	}{
		{"aes256", []string{"-mem=AES256"}, testPass, nil},
		{"aes256-store", []string{"-mem=AES256", "-mx0"}, testPass, nil},
		{"aes128", []string{"-mem=AES128"}, testPass, nil},
		{"zipcrypto", []string{"-mem=ZipCrypto"}, testPass, ErrUnsupported},
		{"plain", nil, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			archive := filepath.Join(t.TempDir(), "7z.zip")
			args := append([]string{"a", "-tzip"}, c.args...)
			if c.pass != "" {
				args = append(args, "-p"+c.pass)
			}
			args = append(args, archive, "*")
			if out, err := run7z(t, bin, src, args...); err != nil {
				t.Fatalf("7z a: %v\n%s", err, out)
			}
			data, err := os.ReadFile(archive)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewReader(bytes.NewReader(data), int64(len(data)), c.pass)
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, f := range r.File {
				if strings.HasSuffix(f.Name, "/") {
					continue
				}
				want, ok := files[f.Name]
				if !ok {
					t.Errorf("unexpected entry %q", f.Name)
					continue
				}
				seen++
				if f.Encrypted != (c.pass != "") {
					t.Errorf("%q: Encrypted = %v", f.Name, f.Encrypted)
				}
				got, err := readEntry(t, r, f.Name)
				if c.want != nil {
					if !errors.Is(err, c.want) {
						t.Errorf("%q: %v, want %v", f.Name, err, c.want)
					}
					continue
				}
				if err != nil {
					t.Errorf("%q: %v", f.Name, err)
				} else if !bytes.Equal(got, want) {
					t.Errorf("%q: read %d bytes that differ from the %d 7-Zip was given", f.Name, len(got), len(want))
				}
			}
			if seen != len(files) {
				t.Errorf("found %d of the %d files", seen, len(files))
			}
			if c.pass == "" || c.want != nil {
				return
			}
			r, err = NewReader(bytes.NewReader(data), int64(len(data)), "wrong-passphrase")
			if err != nil {
				t.Fatal(err)
			}
			checkWrongPassphrase(t, r)
			r, err = NewReader(bytes.NewReader(data), int64(len(data)), "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Open("Observation.ndjson"); !errors.Is(err, ErrPassphraseRequired) {
				t.Errorf("open without a passphrase: %v, want ErrPassphraseRequired", err)
			}
		})
	}
}
