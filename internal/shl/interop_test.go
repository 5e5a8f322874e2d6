package shl_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/jsverify"
	"github.com/phr-project/phr/internal/shl"
	"github.com/phr-project/phr/internal/shlink"
)

// shlData reads a file of ../shared/data/smart-health-links, found by
// walking up from the package directory; the test skips without it.
func shlData(t *testing.T, name string) []byte {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "..", "shared", "data", "smart-health-links", name)
		if b, err := os.ReadFile(p); err == nil {
			return b
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skipf("../shared/data/smart-health-links/%s not found above the repository; skipping the spec vector test", name)
		}
		dir = parent
	}
}

// serve runs handler on 127.0.0.1 and returns its base URL: another,
// independent "conforming server" for the decoding side.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

const (
	specKey  = "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q"
	specLink = "shlink:/eyJ1cmwiOiJodHRwczovL2Voci5leGFtcGxlLm9yZy9xci9ZOXh3a1VkdG1OOXd3b0pvTjNmZkpJaFgyVUd2Q0wxSm5sUFZOTDNrRFdNL20iLCJmbGFnIjoiTFAiLCJrZXkiOiJyeFRnWWxPYUtKUEZ0Y0VkMHFjY2VOOHdFVTRwOTRTcUF3SVdRZTZ1WDdRIiwibGFiZWwiOiJCYWNrLXRvLXNjaG9vbCBpbW11bml6YXRpb25zIGZvciBPbGl2ZXIgQnJvd24ifQ"
)

// TestSpecVectors: the specification's payload encodes byte for byte, and
// the published encrypted IPS Bundle, served by a plain file server as a U
// link and as a manifest with a location, is fetched and decrypted by
// shl.Fetch into exactly the published plaintext.
func TestSpecVectors(t *testing.T) {
	p := shlink.Payload{URL: "https://ehr.example.org/qr/Y9xwkUdtmN9wwoJoN3ffJIhX2UGvCL1JnlPVNL3kDWM/m", Flag: "LP", Key: specKey,
		Label: "Back-to-school immunizations for Oliver Brown"}
	got, err := shlink.Encode(p)
	if err != nil || got != specLink {
		t.Fatalf("Encode = %q, %v\nwant %q", got, err, specLink)
	}
	if dec, err := shlink.Decode(specLink); err != nil || dec.URL != p.URL || dec.Key != p.Key || dec.Flag != "LP" || dec.Label != p.Label {
		t.Fatalf("Decode = %+v, %v", dec, err)
	}

	enc := shlData(t, "IPS_IG-bundle-01-enc.txt")
	want := shlData(t, "IPS_IG-bundle-01.json")
	var details struct {
		Payload struct{ Key string } `json:"shlinkJsonPayload"`
	}
	if err := json.Unmarshal(shlData(t, "IPS_IG-bundle-01-shl-details.json"), &details); err != nil {
		t.Fatal(err)
	}
	var recipients []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ips-enc.txt", func(w http.ResponseWriter, r *http.Request) {
		recipients = append(recipients, r.URL.Query().Get("recipient"))
		w.Header().Set("Content-Type", "application/jose")
		w.Write(enc)
	})
	var base string
	mux.HandleFunc("POST /manifest/{id}", func(w http.ResponseWriter, r *http.Request) {
		var req shl.ManifestRequest
		json.NewDecoder(r.Body).Decode(&req)
		if req.Recipient == "" || req.Passcode != "1234" {
			w.WriteHeader(401)
			w.Write([]byte(`{"remainingAttempts":2}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"files": []map[string]string{{"contentType": "application/fhir+json", "location": base + "/ips-enc.txt"}}})
	})
	base = serve(t, mux)

	direct, err := shlink.EncodeViewer("https://viewer.example/", shlink.Payload{URL: base + "/ips-enc.txt", Flag: "LU", Key: details.Payload.Key, Label: "Demo SHL for IPS_IG-bundle-01"})
	if err != nil {
		t.Fatal(err)
	}
	_, files, err := shl.Fetch(t.Context(), direct, shl.FetchOptions{Recipient: "vector test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || !bytes.Equal(files[0].Data, want) || recipients[0] != "vector test" {
		t.Fatalf("U fetch: %d files, recipient %q", len(files), recipients)
	}

	manifested, _ := shlink.Encode(shlink.Payload{URL: base + "/manifest/" + shlink.NewManifestID(), Flag: "P", Key: details.Payload.Key})
	_, _, err = shl.Fetch(t.Context(), manifested, shl.FetchOptions{Passcode: "0000"})
	var re *shl.RemoteError
	if !errors.As(err, &re) || re.Status != 401 || re.RemainingAttempts == nil || *re.RemainingAttempts != 2 {
		t.Fatalf("wrong passcode: %v", err)
	}
	_, files, err = shl.Fetch(t.Context(), manifested, shl.FetchOptions{Passcode: "1234"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || !files[0].Location || !bytes.Equal(files[0].Data, want) {
		t.Fatalf("manifest fetch: %d files", len(files))
	}
}

// TestIndependentChecks: a link made by phr is opened by the npm jose
// package (Node), its QR code is read back by zbarimg, and shl.Fetch
// opens it end to end.
func TestIndependentChecks(t *testing.T) {
	f := start(t, "sqlite")
	l := f.create(t, f.tokA, map[string]any{"label": "Allergies for the ER", "passcode": "4711", "content": []map[string]any{{"kind": "summary"}}})
	lv := f.create(t, f.tokA, map[string]any{"label": "viewer QR", "qrViewer": true})
	r, m := f.manifest(t, l, map[string]any{"recipient": "jose", "passcode": "4711"})
	if r.Status != 200 {
		t.Fatalf("manifest: %d %s", r.Status, r.Body)
	}

	t.Run("fetch", func(t *testing.T) {
		_, files, err := shl.Fetch(context.Background(), l.ViewerLink, shl.FetchOptions{Passcode: "4711", EmbeddedLengthMax: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(files) != 1 || !files[0].Location || !bytes.Contains(files[0].Data, []byte("Penicillin Alpha")) || files[0].ContentType != "application/fhir+json" {
			t.Fatalf("fetched %d files", len(files))
		}
	})

	t.Run("jose", func(t *testing.T) {
		var res []struct {
			OK        bool              `json:"ok"`
			Header    map[string]string `json:"header"`
			Plaintext string            `json:"plaintext"`
			Error     string            `json:"error"`
		}
		jsverify.Run(t, "jwe.mjs", []map[string]any{{"op": "decrypt", "jwe": m.Files[0].Embedded, "key": l.payload.Key}}, &res)
		if len(res) != 1 || !res[0].OK {
			t.Fatalf("jose: %+v", res)
		}
		plain, err := base64.RawURLEncoding.DecodeString(res[0].Plaintext)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(plain, &doc); err != nil || doc["type"] != "document" || !bytes.Contains(plain, []byte("Penicillin Alpha")) {
			t.Fatalf("jose plaintext: %v %.200s", err, plain)
		}
		if res[0].Header["alg"] != "dir" || res[0].Header["enc"] != "A256GCM" || res[0].Header["cty"] != "application/fhir+json" || res[0].Header["zip"] != "DEF" {
			t.Fatalf("header %v", res[0].Header)
		}
	})

	t.Run("zbarimg", func(t *testing.T) {
		zbar, err := exec.LookPath("zbarimg")
		if err != nil {
			t.Skip("zbarimg is not installed (apt-get install -y zbar-tools); skipping the QR scan")
		}
		png, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(l.QR.PNG, "data:image/png;base64,"))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "link.png")
		os.WriteFile(path, png, 0o600)
		// QR codes only: with every symbology on, zbarimg now and then
		// also reads a bar code in the QR code's modules (an extra line
		// such as 850147).
		out, err := exec.Command(zbar, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", path).Output()
		if err != nil {
			t.Fatalf("zbarimg: %v", err)
		}
		if got := strings.TrimRight(string(out), "\n"); got != l.Link {
			t.Fatalf("zbarimg read %q, want %q", got, l.Link)
		}
		// With qrViewer the QR code opens the viewer page.
		png, _ = base64.StdEncoding.DecodeString(strings.TrimPrefix(lv.QR.PNG, "data:image/png;base64,"))
		os.WriteFile(path, png, 0o600)
		out, err = exec.Command(zbar, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", path).Output()
		if got := strings.TrimRight(string(out), "\n"); err != nil || got != lv.ViewerLink {
			t.Fatalf("zbarimg read %q (%v), want %q", got, err, lv.ViewerLink)
		}
		// The SVG too, when ImageMagick can render SVG (rsvg-convert).
		svg := filepath.Join(t.TempDir(), "link.svg")
		os.WriteFile(svg, []byte(l.QR.SVG), 0o600)
		out, err = exec.Command(zbar, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", svg).Output()
		if _, rerr := exec.LookPath("rsvg-convert"); err != nil && rerr != nil {
			t.Logf("zbarimg cannot read SVG here (%v, no rsvg-convert); SVG scan not checked", err)
			return
		}
		if got := strings.TrimRight(string(out), "\n"); err != nil || got != l.Link {
			t.Fatalf("zbarimg read the SVG as %q (%v), want %q", got, err, l.Link)
		}
	})
}
