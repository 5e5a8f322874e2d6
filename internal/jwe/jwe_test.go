package jwe

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/jsverify"
)

// The key of the SHL specification's test vector and published examples.
const specKey = "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q"

func shlData(t testing.TB, name string) []byte {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "data", "smart-health-links")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared test data %s is absent (it sits beside the repository as ../shared); skipping", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustKey(t testing.TB, s string) []byte {
	t.Helper()
	k, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(k) != KeySize {
		t.Fatalf("bad test key %q: %v", s, err)
	}
	return k
}

func randomKey(t testing.TB) []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

// TestDecryptIPSExample decrypts the published SHL example with the key
// from its link details, into exactly the published Bundle.
func TestDecryptIPSExample(t *testing.T) {
	enc := shlData(t, "IPS_IG-bundle-01-enc.txt")
	var details struct {
		ShlinkJSONPayload struct{ Key string } `json:"shlinkJsonPayload"`
	}
	if err := json.Unmarshal(shlData(t, "IPS_IG-bundle-01-shl-details.json"), &details); err != nil {
		t.Fatal(err)
	}
	want := shlData(t, "IPS_IG-bundle-01.json")

	plain, h, err := Decrypt(string(enc), mustKey(t, details.ShlinkJSONPayload.Key))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, want) {
		t.Fatalf("plaintext (%d bytes) differs from IPS_IG-bundle-01.json (%d bytes)", len(plain), len(want))
	}
	// The example has a kid and no cty: both must be tolerated.
	wantH := Header{Alg: "dir", Enc: "A256GCM", Kid: "ufYGlu_C8IuzJ3HV-wQqsIv-pMm2uZm-vGy37r3hwts"}
	if h != wantH {
		t.Errorf("header = %+v, want %+v", h, wantH)
	}
}

// TestCARINExampleIsAJWS covers the other published example: its "-enc"
// file is a signed SMART Health Card (JWS), not a JWE. Decrypt must say so
// rather than fail obscurely; its raw-DEFLATE payload carries the published
// CARIN entries.
func TestCARINExampleIsAJWS(t *testing.T) {
	enc := strings.TrimSpace(string(shlData(t, "CARIN_INS_CD-bundle-01-enc.txt")))
	_, _, err := Decrypt(enc, mustKey(t, specKey))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "JWS") {
		t.Fatalf("Decrypt(JWS) error = %v, want ErrMalformed naming a JWS", err)
	}

	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(enc, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	inflated, err := inflate(payload, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var vc struct {
		VC struct {
			CredentialSubject struct {
				FHIRBundle struct{ Entry any } `json:"fhirBundle"`
			} `json:"credentialSubject"`
		} `json:"vc"`
	}
	if err := json.Unmarshal(inflated, &vc); err != nil {
		t.Fatal(err)
	}
	var want any
	if err := json.Unmarshal(shlData(t, "CARIN_INS_CD-bundle-01.json"), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(vc.VC.CredentialSubject.FHIRBundle.Entry, want) {
		t.Error("the JWS payload's fhirBundle.entry differs from CARIN_INS_CD-bundle-01.json")
	}
}

func TestRoundTrip(t *testing.T) {
	key := randomKey(t)
	big := bytes.Repeat([]byte(`{"resourceType":"Observation","valueQuantity":{"value":1.50}},`), 5000)
	for _, plain := range [][]byte{nil, []byte("x"), []byte(`{"resourceType":"Patient"}`), big} {
		for _, compress := range []bool{false, true} {
			opts := Options{ContentType: "application/fhir+json", Compress: compress}
			compact, err := Encrypt(key, plain, opts)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			n, err := EncryptTo(&buf, key, bytes.NewReader(plain), opts)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(buf.Len()) {
				t.Errorf("EncryptTo reported %d bytes, wrote %d", n, buf.Len())
			}
			for _, c := range []string{compact, buf.String()} {
				got, h, err := Decrypt(c, key)
				if err != nil {
					t.Fatalf("len %d compress %v: %v", len(plain), compress, err)
				}
				if !bytes.Equal(got, plain) {
					t.Errorf("len %d compress %v: round trip changed the plaintext", len(plain), compress)
				}
				want := Header{Alg: "dir", Enc: "A256GCM", Cty: "application/fhir+json"}
				if compress {
					want.Zip = "DEF"
				}
				if h != want {
					t.Errorf("header %+v, want %+v", h, want)
				}
			}
			if compress && len(plain) == len(big) && len(compact) > len(big)/10 {
				t.Errorf("compressed JWE of %d repetitive bytes is %d characters; zip had no effect", len(big), len(compact))
			}
		}
	}
}

func TestLayout(t *testing.T) {
	key := randomKey(t)
	compact, err := Encrypt(key, []byte("hello"), Options{ContentType: "application/fhir+json", Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(compact, ".")
	if len(parts) != 5 || parts[1] != "" {
		t.Fatalf("want 5 segments with an empty encrypted key, got %q", compact)
	}
	hj, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if string(hj) != `{"alg":"dir","enc":"A256GCM","cty":"application/fhir+json","zip":"DEF"}` {
		t.Errorf("protected header %s", hj)
	}
	iv, _ := base64.RawURLEncoding.DecodeString(parts[2])
	tag, _ := base64.RawURLEncoding.DecodeString(parts[4])
	if len(iv) != 12 || len(tag) != 16 {
		t.Errorf("iv %d bytes, tag %d bytes; want 12 and 16", len(iv), len(tag))
	}
	// Independently of Decrypt: AES-256-GCM with the protected header's
	// base64url text as AAD must open it.
	ct, _ := base64.RawURLEncoding.DecodeString(parts[3])
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	if _, err := aead.Open(nil, iv, append(ct, tag...), []byte(parts[0])); err != nil {
		t.Errorf("AES-GCM with AAD = protected header text: %v", err)
	}
}

func TestFreshIV(t *testing.T) {
	key := randomKey(t)
	seen := map[string]bool{}
	for range 100 {
		c, err := Encrypt(key, []byte("same file"), Options{ContentType: "text/plain"})
		if err != nil {
			t.Fatal(err)
		}
		iv := strings.Split(c, ".")[2]
		if seen[iv] {
			t.Fatalf("IV %s repeated", iv)
		}
		seen[iv] = true
	}
}

func TestWrongKeyAndTampering(t *testing.T) {
	key := randomKey(t)
	plain := []byte(`{"resourceType":"Bundle","type":"collection","entry":[]}`)
	compact, err := Encrypt(key, plain, Options{ContentType: "application/fhir+json"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Decrypt(compact, randomKey(t)); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: error %v, want ErrAuth", err)
	}
	if _, _, err := Decrypt(compact, key[:16]); err == nil || !strings.Contains(err.Error(), "16 bytes") {
		t.Errorf("short key: error %v, want the key length named", err)
	}

	parts := strings.Split(compact, ".")
	// Change one character in the middle of each protected segment. Header
	// changes may break its JSON (ErrMalformed) or its authentication.
	for _, seg := range []int{0, 2, 3, 4} {
		p := []byte(parts[seg])
		i := len(p) / 2
		if p[i] == 'A' {
			p[i] = 'B'
		} else {
			p[i] = 'A'
		}
		mod := append([]string(nil), parts...)
		mod[seg] = string(p)
		_, _, err := Decrypt(strings.Join(mod, "."), key)
		if err == nil {
			t.Errorf("segment %d altered: decrypted anyway", seg+1)
		} else if seg != 0 && !errors.Is(err, ErrAuth) {
			t.Errorf("segment %d altered: error %v, want ErrAuth", seg+1, err)
		}
	}
	// A header that is still valid JSON but differs (as a downgrade would)
	// must fail authentication: the header text is the AAD.
	alt := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"dir","enc":"A256GCM","cty":"text/plain"}`))
	if _, _, err := Decrypt(alt+"."+strings.Join(parts[1:], "."), key); !errors.Is(err, ErrAuth) {
		t.Errorf("swapped header: error %v, want ErrAuth", err)
	}
	// Truncated ciphertext.
	mod := append([]string(nil), parts...)
	ct, _ := base64.RawURLEncoding.DecodeString(mod[3])
	mod[3] = base64.RawURLEncoding.EncodeToString(ct[:len(ct)-3])
	if _, _, err := Decrypt(strings.Join(mod, "."), key); !errors.Is(err, ErrAuth) {
		t.Errorf("truncated ciphertext: error %v, want ErrAuth", err)
	}
}

// build makes a JWE with an arbitrary protected header, encrypting with
// crypto/cipher directly, to exercise Decrypt's header checks.
func build(t *testing.T, key []byte, header, encKey string, iv []byte, plain []byte) string {
	t.Helper()
	h := base64.RawURLEncoding.EncodeToString([]byte(header))
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCMWithNonceSize(block, max(len(iv), 1))
	sealed := aead.Seal(nil, iv, plain, []byte(h))
	ct, tag := sealed[:len(sealed)-16], sealed[len(sealed)-16:]
	e := base64.RawURLEncoding.EncodeToString
	return h + "." + encKey + "." + e(iv) + "." + e(ct) + "." + e(tag)
}

func TestMalformedAndUnsupported(t *testing.T) {
	key := randomKey(t)
	iv := make([]byte, 12)
	good := `{"alg":"dir","enc":"A256GCM"}`
	valid := build(t, key, good, "", iv, []byte("x"))
	parts := strings.Split(valid, ".")
	cases := []struct {
		name, in string
		want     error
		mention  string
	}{
		{"empty", "", ErrMalformed, "1 dot-separated"},
		{"four segments", strings.Join(parts[:4], "."), ErrMalformed, "4 dot-separated"},
		{"padding", parts[0] + "..AAAAAAAAAAAAAAAA=." + parts[3] + "." + parts[4], ErrMalformed, "offset"},
		{"space inside", parts[0] + ".. " + parts[2][1:] + "." + parts[3] + "." + parts[4], ErrMalformed, "initialization vector"},
		{"newline inside", parts[0] + "." + "." + parts[2] + "." + parts[3][:1] + "\n" + parts[3][1:] + "." + parts[4], ErrMalformed, "ciphertext (segment 4): character '\\n' at offset"},
		{"header not JSON", build(t, key, `alg=dir`, "", iv, []byte("x")), ErrMalformed, "not a JSON object"},
		{"no alg", build(t, key, `{"enc":"A256GCM"}`, "", iv, []byte("x")), ErrMalformed, `no "alg"`},
		{"alg number", build(t, key, `{"alg":1,"enc":"A256GCM"}`, "", iv, []byte("x")), ErrMalformed, "must be a string"},
		{"RSA", build(t, key, `{"alg":"RSA-OAEP","enc":"A256GCM"}`, "", iv, []byte("x")), ErrUnsupported, "RSA-OAEP"},
		{"A128GCM", build(t, key, `{"alg":"dir","enc":"A128GCM"}`, "", iv, []byte("x")), ErrUnsupported, "A128GCM"},
		{"zip GZ", build(t, key, `{"alg":"dir","enc":"A256GCM","zip":"GZ"}`, "", iv, []byte("x")), ErrUnsupported, "GZ"},
		{"crit", build(t, key, `{"alg":"dir","enc":"A256GCM","crit":["exp"],"exp":1}`, "", iv, []byte("x")), ErrUnsupported, "critical"},
		{"encrypted key", build(t, key, good, "AAAA", iv, []byte("x")), ErrMalformed, "must be empty"},
		{"short IV", build(t, key, good, "", make([]byte, 8), []byte("x")), ErrMalformed, "8 bytes"},
		{"short tag", strings.Join(parts[:4], ".") + ".AAAA", ErrMalformed, "3 bytes"},
		{"zip not deflate", build(t, key, `{"alg":"dir","enc":"A256GCM","zip":"DEF"}`, "", iv, []byte{0xff, 0xff, 0xff}), ErrMalformed, "inflate"},
	}
	for _, c := range cases {
		_, _, err := Decrypt(c.in, key)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: error %v, want %v mentioning %q", c.name, err, c.want, c.mention)
		}
	}
	if _, _, err := Decrypt(valid+"\n", key); err != nil {
		t.Errorf("trailing newline: %v", err)
	}
	if _, err := Encrypt(key, nil, Options{}); err == nil {
		t.Error("Encrypt without a content type succeeded")
	}
}

func TestInflateLimit(t *testing.T) {
	key := randomKey(t)
	// 4 MiB of zeros deflates to about 4 kB: a small zip bomb.
	bomb := make([]byte, 4<<20)
	compact, err := Encrypt(key, bomb, Options{ContentType: "application/fhir+json", Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(compact) > 16<<10 {
		t.Fatalf("compressed bomb is %d characters", len(compact))
	}
	if _, _, err := DecryptLimit(compact, key, 256<<10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("inflating 4 MiB with a 256 KiB limit: error %v, want ErrTooLarge", err)
	}
	got, _, err := DecryptLimit(compact, key, 4<<20)
	if err != nil || len(got) != len(bomb) {
		t.Errorf("exactly at the limit: %d bytes, %v", len(got), err)
	}
	plain, err := Encrypt(key, make([]byte, 2000), Options{ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := DecryptLimit(plain, key, 1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("uncompressed 2000 bytes with a 1000 limit: error %v, want ErrTooLarge", err)
	}
}

type jsResult struct {
	OK        bool            `json:"ok"`
	Code      string          `json:"code"`
	Error     string          `json:"error"`
	Header    json.RawMessage `json:"header"`
	Plaintext string          `json:"plaintext"`
	JWE       string          `json:"jwe"`
}

// TestJoseInterop checks both directions against the npm jose package:
// it decrypts what Encrypt makes (and refuses what was altered), and
// Decrypt opens what it makes, with and without cty, zip and kid.
func TestJoseInterop(t *testing.T) {
	key := randomKey(t)
	k64 := base64.RawURLEncoding.EncodeToString(key)
	e64 := base64.RawURLEncoding.EncodeToString
	plains := [][]byte{[]byte(`{"resourceType":"Patient","id":"p1"}`), bytes.Repeat([]byte("héllo FHIR "), 40000)}

	var reqs []map[string]any
	var wantPlain [][]byte
	for _, p := range plains {
		for _, z := range []bool{false, true} {
			c, err := Encrypt(key, p, Options{ContentType: "application/fhir+json", Compress: z})
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, map[string]any{"op": "decrypt", "jwe": c, "key": k64})
			wantPlain = append(wantPlain, p)
		}
	}
	good := reqs[0]["jwe"].(string)
	flip := map[byte]string{'A': "B"}[good[len(good)-30]]
	if flip == "" {
		flip = "A"
	}
	tampered := good[:len(good)-30] + flip + good[len(good)-29:]
	reqs = append(reqs, map[string]any{"op": "decrypt", "jwe": tampered, "key": k64},
		map[string]any{"op": "decrypt", "jwe": good, "key": e64(randomKey(t))})
	headers := []string{
		`{"alg":"dir","enc":"A256GCM","cty":"application/smart-health-card"}`,
		`{"alg":"dir","enc":"A256GCM"}`,
		`{"alg":"dir","enc":"A256GCM","zip":"DEF","kid":"k-1","cty":"application/fhir+json"}`,
	}
	for _, h := range headers {
		reqs = append(reqs, map[string]any{"op": "encrypt", "key": k64, "plaintext": e64(plains[1]), "header": json.RawMessage(h)})
	}

	var res []jsResult
	jsverify.Run(t, "jwe.mjs", reqs, &res)
	if len(res) != len(reqs) {
		t.Fatalf("jose answered %d of %d requests", len(res), len(reqs))
	}
	for i, p := range wantPlain {
		if !res[i].OK {
			t.Errorf("jose could not decrypt our JWE %d: %s %s", i, res[i].Code, res[i].Error)
			continue
		}
		if got, _ := base64.RawURLEncoding.DecodeString(res[i].Plaintext); !bytes.Equal(got, p) {
			t.Errorf("jose decrypted our JWE %d to different bytes", i)
		}
	}
	n := len(wantPlain)
	if res[n].OK || res[n+1].OK {
		t.Errorf("jose accepted an altered JWE (%v) or a wrong key (%v)", res[n].OK, res[n+1].OK)
	}
	for i, h := range headers {
		r := res[n+2+i]
		if !r.OK {
			t.Errorf("jose encrypt with %s: %s", h, r.Error)
			continue
		}
		got, hdr, err := Decrypt(r.JWE, key)
		if err != nil {
			t.Errorf("Decrypt of jose's JWE with %s: %v", h, err)
			continue
		}
		if !bytes.Equal(got, plains[1]) {
			t.Errorf("Decrypt of jose's JWE with %s changed the plaintext", h)
		}
		var want Header
		json.Unmarshal([]byte(h), &want)
		if hdr != want {
			t.Errorf("header %+v, want %+v", hdr, want)
		}
	}
}

func FuzzDecrypt(f *testing.F) {
	key := make([]byte, KeySize)
	c, _ := Encrypt(key, []byte(`{"a":1}`), Options{ContentType: "application/json", Compress: true})
	f.Add(c)
	f.Add("a.b.c.d.e")
	f.Add("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..AAAAAAAAAAAAAAAA..AAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		plain, _, err := DecryptLimit(s, key, 1<<20)
		if err == nil && len(plain) > 1<<20 {
			t.Fatalf("returned %d bytes past the limit", len(plain))
		}
	})
}

func benchPlain(b *testing.B) []byte {
	return shlData(b, "IPS_IG-bundle-01.json")
}

func BenchmarkEncrypt(b *testing.B) {
	plain := benchPlain(b)
	key := randomKey(b)
	for _, z := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "zip"}[z]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				if _, err := Encrypt(key, plain, Options{ContentType: "application/fhir+json", Compress: z}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	plain := benchPlain(b)
	key := randomKey(b)
	for _, z := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "zip"}[z]
		c, err := Encrypt(key, plain, Options{ContentType: "application/fhir+json", Compress: z})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				if _, _, err := Decrypt(c, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
