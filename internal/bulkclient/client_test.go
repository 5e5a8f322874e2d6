package bulkclient_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/auth/clientauth"
	"github.com/phr-project/phr/internal/bulkclient"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
)

func seed(t *testing.T, s *servertest.Server, patients int) {
	admin := s.AdminToken()
	for i := 0; i < patients; i++ {
		id := fmt.Sprintf("p%d", i)
		if r := s.Do("PUT", "Patient/"+id, admin, map[string]any{"resourceType": "Patient", "id": id, "gender": "male"}); r.Status >= 300 {
			t.Fatalf("PUT: %d %s", r.Status, r.Body)
		}
		if r := s.Do("POST", "Observation", admin, map[string]any{"resourceType": "Observation", "status": "final",
			"code": map[string]any{"text": "weight"}, "subject": map[string]any{"reference": "Patient/" + id}}); r.Status >= 300 {
			t.Fatalf("POST: %d %s", r.Status, r.Body)
		}
	}
}

func TestExportToDirectory(t *testing.T) {
	s := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.ExportRate = 50 * time.Millisecond }})
	seed(t, s, 5)
	s.App.Bulk.SetMaxFileResources(2)
	c := &bulkclient.Client{Base: s.FHIR, Tokens: bulkclient.StaticToken(s.Token("system/*.read", "")), MinWait: 100 * time.Millisecond}
	dir := t.TempDir()
	var lines []string
	res, err := c.Export(context.Background(), bulkclient.Request{Types: []string{"Patient", "Observation"}}, dir, func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Resources["Patient"] != 5 || res.Resources["Observation"] != 5 || len(res.Files) != 6 {
		t.Fatalf("result %+v files %v", res.Resources, res.Files)
	}
	for _, f := range res.Files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var r map[string]any
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if !strings.HasPrefix(filepath.Base(f), r["resourceType"].(string)+"-") {
				t.Fatalf("%s holds a %v", f, r["resourceType"])
			}
		}
		fh.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "downloaded") {
		t.Fatalf("log %v", lines)
	}
	// Patient list with POST, and a group that does not exist.
	res, err = c.Export(context.Background(), bulkclient.Request{Patients: []string{"p1"}, Types: []string{"Observation"}}, t.TempDir(), nil)
	if err != nil || res.Resources["Observation"] != 1 {
		t.Fatalf("patient export: %v %+v", err, res)
	}
	_, err = c.Export(context.Background(), bulkclient.Request{Group: "missing"}, t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing group: %v", err)
	}
	// Cancel.
	status, err := c.KickOff(context.Background(), bulkclient.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(context.Background(), status); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(context.Background(), status, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("wait after cancel: %v", err)
	}
	// A wrong token is reported.
	bad := &bulkclient.Client{Base: s.FHIR, Tokens: bulkclient.StaticToken("nope")}
	if _, err := bad.KickOff(context.Background(), bulkclient.Request{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad token: %v", err)
	}
}

type clients map[string]clientauth.Client

func (c clients) Client(_ context.Context, id string) (clientauth.Client, error) {
	if cl, ok := c[id]; ok {
		return cl, nil
	}
	return clientauth.Client{}, clientauth.ErrUnknownClient
}

// The client assertions are checked by the server's own verifier
// (package clientauth), for RSA and EC keys read from PEM and JWK files.
func TestBackendAssertionVerifies(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER})
	ecJWK, _ := json.Marshal(jose.JSONWebKey{Key: ecKey, KeyID: "ec-1", Algorithm: "ES384", Use: "sig"})
	const tokenURL = "https://phr.example/auth/token"
	for name, c := range map[string]struct {
		file []byte
		kid  string
		pub  any
	}{"rsa-pem": {rsaPEM, "rsa-1", rsaKey.Public()}, "ec-jwk": {ecJWK, "", ecKey.Public()}} {
		t.Run(name, func(t *testing.T) {
			key, kid, err := bulkclient.LoadKey(c.file)
			if err != nil {
				t.Fatal(err)
			}
			if kid == "" {
				kid = c.kid
			}
			set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: c.pub, KeyID: kid, Use: "sig"}}})
			b := &bulkclient.Backend{ClientID: "exporter", Key: key, KeyID: kid}
			a, err := b.Assertion(tokenURL)
			if err != nil {
				t.Fatal(err)
			}
			reg := clients{"exporter": {ID: "exporter", JWKS: set}}
			jtis := &clientauth.MemoryJTIs{}
			id, err := clientauth.VerifyClientAssertion(context.Background(), a, tokenURL, reg, jtis, time.Now())
			if err != nil || id != "exporter" {
				t.Fatalf("verify: %q %v", id, err)
			}
			if _, err := clientauth.VerifyClientAssertion(context.Background(), a, "https://other.example/token", reg, jtis, time.Now()); err == nil {
				t.Fatal("an assertion for another audience was accepted")
			}
		})
	}
}

// A backend client registered on the server gets its token from the
// server's SMART token endpoint (found by discovery) with an ES384 key,
// and runs an export with it; a client asking with someone else's key is
// refused.
func TestBackendServicesExport(t *testing.T) {
	s := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.ExportRate = 50 * time.Millisecond }})
	seed(t, s, 2)
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES384", Use: "sig"}}})
	cl, err := s.App.Users.AddClient(context.Background(), authdb.Client{ID: "population-health", Name: "Population health", Scope: "system/*.read", JWKS: set})
	if err != nil {
		t.Fatal(err)
	}
	c := &bulkclient.Client{Base: s.FHIR, MinWait: 100 * time.Millisecond,
		Tokens: &bulkclient.Backend{ClientID: cl.ID, Key: key, KeyID: "k1", Base: s.FHIR}}
	res, err := c.Export(context.Background(), bulkclient.Request{Types: []string{"Patient"}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resources["Patient"] != 2 {
		t.Fatalf("exported %v", res.Resources)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	bad := &bulkclient.Client{Base: s.FHIR, Tokens: &bulkclient.Backend{ClientID: cl.ID, Key: other, KeyID: "k1", Base: s.FHIR}}
	if _, err := bad.KickOff(context.Background(), bulkclient.Request{}); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("wrong key: %v", err)
	}
}

// TestNotTheFHIRBase: a URL that is a web site's root, not its FHIR base,
// answers the kick-off with an HTML page; the error says so in a line,
// without the page.
func TestNotTheFHIRBase(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	root := strings.TrimSuffix(s.FHIR, "/fhir")
	c := &bulkclient.Client{Base: root, Tokens: bulkclient.StaticToken(s.AdminToken())}
	_, err := c.KickOff(context.Background(), bulkclient.Request{Patient: true})
	if err == nil || !strings.Contains(err.Error(), "FHIR base") || strings.Contains(err.Error(), "<") {
		t.Fatalf("kick-off at the site's root: %v", err)
	}
}
