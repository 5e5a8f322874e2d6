package importer_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/zipaes"
)

// An encrypted .sphr (WinZip AES) imports with its passphrase, is refused
// without it or with a wrong one, and re-attaches its files byte for byte.
func TestHTTPImportEncryptedSPHR(t *testing.T) {
	dir := findData(t, "phr-ig-examples")
	phr, err := os.ReadFile(filepath.Join(dir, "WilliamSim.phr"))
	if err != nil {
		t.Fatal(err)
	}
	zb, _ := os.ReadFile(filepath.Join(dir, "WilliamSim.sphr"))
	img := unzipEntry(t, zb, "WilliamSim/xr-chest.jpg")
	// The .phr plus a Media pointing at the image by relative URL.
	media := []byte(`{"resourceType":"Media","id":"xr","status":"completed","subject":{"reference":"Patient/wsim001"},"content":{"contentType":"image/jpeg","url":"./xr-chest.jpg","title":"XR Chest"}}` + "\n")
	var buf bytes.Buffer
	zw := zipaes.NewWriter(&buf, "correct horse battery staple")
	w, _ := zw.Create("Sim/Sim.phr")
	w.Write(phr)
	w.Write(media)
	w, _ = zw.Create("Sim/xr-chest.jpg")
	w.Write(img)
	w, _ = zw.Create("__MACOSX/Sim/._xr-chest.jpg")
	w.Write([]byte("junk"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, "sqlite")
	tok := s.AdminToken()
	_, issues, st := postImport(t, s, tok, "sim", "application/zip", bytes.NewReader(buf.Bytes()))
	if st != 401 {
		t.Errorf("without passphrase: %d %v", st, issues)
	}
	_, issues, st = postImport(t, s, tok, "sim", "application/zip", bytes.NewReader(buf.Bytes()), "X-PHR-Passphrase", "wrong")
	if st != 403 {
		t.Errorf("wrong passphrase: %d %v", st, issues)
	}
	sum, issues, st := postImport(t, s, tok, "sim", "application/zip", bytes.NewReader(buf.Bytes()), "X-PHR-Passphrase", "correct horse battery staple")
	if st != 200 || sum["created"] < 2 {
		t.Fatalf("import: %d %v %v", st, sum, issues)
	}
	resp := s.Do("GET", "Media/xr", tok, nil)
	if resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`"url":"Binary/`+attID(img)+`"`)) {
		t.Fatalf("Media: %d %s", resp.Status, resp.Body)
	}
	resp = s.Do("GET", "Binary/"+attID(img), tok, nil, "Accept", "image/jpeg")
	if resp.Status != 200 || !bytes.Equal(resp.Body, img) {
		t.Errorf("Binary: %d, %d bytes, want %d", resp.Status, len(resp.Body), len(img))
	}
	again, _, _ := postImport(t, s, tok, "sim", "application/zip", bytes.NewReader(buf.Bytes()), "X-PHR-Passphrase", "correct horse battery staple")
	want(t, "again", again, "created", 0)
	want(t, "again", again, "updated", 0)
}
