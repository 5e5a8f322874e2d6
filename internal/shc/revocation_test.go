package shc_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/shc"
	"github.com/phr-project/phr/internal/shc/shctest"
)

func TestCRLRevokes(t *testing.T) {
	issued := time.Unix(1687450764, 657e6)
	l := &shc.CRL{Kid: "k", Method: "rid", Ctr: 3, Rids: []string{"a", "b.1687450765", "c.1687450700", "d.junk"}}
	for rid, want := range map[string]bool{"a": true, "b": true, "c": false, "d": true, "e": false, "": false} {
		if got := l.Revokes(&shc.Card{RevocationID: rid, NotBefore: issued}); got != want {
			t.Errorf("rid %q: revoked %v, want %v", rid, got, want)
		}
	}
}

// TestRevocationExamples checks the specification's example cards against
// the example issuer's revocation list, read from beside its key set: the
// list revokes example 03 (its rid, for cards issued before a time after
// the card's nbf) and not example 00.
func TestRevocationExamples(t *testing.T) {
	need(t)
	set := filepath.Join(examples, "issuer/.well-known/jwks.json")
	keys, err := shc.LoadKeys(set)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := shc.LoadRevocation(set)
	if err != nil {
		t.Fatal(err)
	}
	const kid = "3Kfdg-XwP-7gXyywtUfUADwBumDOPKMQx-iELL11W9s"
	if kl := lists[kid]; kl.Version != 1 || kl.File != filepath.Join(examples, "issuer/.well-known/crl", kid+".json") || len(lists) != 1 {
		t.Fatalf("lists %+v", lists)
	}
	card := func(n string) *shc.Card {
		b, err := os.ReadFile(filepath.Join(examples, "example-"+n+"-d-jws.txt"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := shc.Parse(string(b))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	is := &shc.Issuers{Trusted: keys, TrustedLists: lists}
	err = is.CheckRevocation(ctx, card("03"))
	if !errors.Is(err, shc.ErrRevoked) || !strings.Contains(err.Error(), "revocation list 1 of key "+kid) {
		t.Errorf("example 03: %v, want ErrRevoked", err)
	}
	if err := is.CheckRevocation(ctx, card("00")); err != nil {
		t.Errorf("example 00: %v", err)
	}
	// The key declares lists, and none is beside the key set.
	dir := t.TempDir()
	b, _ := os.ReadFile(set)
	os.WriteFile(filepath.Join(dir, "jwks.json"), b, 0o600)
	lists, _ = shc.LoadRevocation(filepath.Join(dir, "jwks.json"))
	err = (&shc.Issuers{Trusted: keys, TrustedLists: lists}).CheckRevocation(ctx, card("03"))
	if !errors.Is(err, shc.ErrNotChecked) || !strings.Contains(err.Error(), "crlVersion 1") {
		t.Errorf("no list: %v, want ErrNotChecked", err)
	}
}

// TestRevocationFetched fetches an issuer's revocation list (an issuer on
// 127.0.0.1): a card it lists is revoked, a list newer than a local one is
// fetched, and an issuer that publishes none (404) revokes nothing.
func TestRevocationFetched(t *testing.T) {
	issuer := shctest.NewIssuer(t)
	jwk := issuer.JWK
	var list shc.CRL
	fetches := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/iss/.well-known/jwks.json":
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
		case "/iss/.well-known/crl/" + jwk.KeyID + ".json":
			fetches++
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(list)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	sign := func(iss, rid string) *shc.Card {
		payload := `{"iss":"` + iss + `","nbf":1700000000,"vc":{"type":["https://smarthealth.cards#health-card"],"rid":"` + rid + `","credentialSubject":{"fhirVersion":"4.0.1","fhirBundle":{"resourceType":"Bundle","type":"collection","entry":[]}}}}`
		c, err := shc.Parse(issuer.Sign(t, "", []byte(payload)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	list = shc.CRL{Kid: jwk.KeyID, Method: "rid", Ctr: 2, Rids: []string{"bad1"}}
	is := &shc.Issuers{Fetch: &jwks.Cache{}}
	if err := is.CheckRevocation(ctx, sign(srv.URL+"/iss", "bad1")); !errors.Is(err, shc.ErrRevoked) {
		t.Errorf("listed card: %v, want ErrRevoked", err)
	}
	if err := is.CheckRevocation(ctx, sign(srv.URL+"/iss", "good")); err != nil {
		t.Errorf("unlisted card: %v", err)
	}
	if fetches != 1 {
		t.Errorf("the list was fetched %d times, want once (cached)", fetches)
	}
	// A trusted key whose local list is older than its crlVersion: the
	// issuer's newer one is fetched.
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "crl"), 0o700)
	os.WriteFile(filepath.Join(dir, "crl", jwk.KeyID+".json"), []byte(`{"kid":"`+jwk.KeyID+`","method":"rid","ctr":1,"rids":[]}`), 0o600)
	is = &shc.Issuers{Trusted: []jose.JSONWebKey{jwk}, TrustedLists: map[string]shc.KeyLists{jwk.KeyID: {Version: 2, File: filepath.Join(dir, "crl", jwk.KeyID+".json")}}, Fetch: &jwks.Cache{}}
	if err := is.CheckRevocation(ctx, sign(srv.URL+"/iss", "bad1")); !errors.Is(err, shc.ErrRevoked) {
		t.Errorf("stale local list: %v, want ErrRevoked from the fetched one", err)
	}
	// A stale list that already revokes the card settles it: lists only
	// grow.
	os.WriteFile(filepath.Join(dir, "crl", jwk.KeyID+".json"), []byte(`{"kid":"`+jwk.KeyID+`","method":"rid","ctr":1,"rids":["old1"]}`), 0o600)
	offline := &shc.Issuers{Trusted: []jose.JSONWebKey{jwk}, TrustedLists: is.TrustedLists}
	if err := offline.CheckRevocation(ctx, sign(srv.URL+"/iss", "old1")); !errors.Is(err, shc.ErrRevoked) {
		t.Errorf("revoked by a stale list: %v, want ErrRevoked", err)
	}
	// Without fetching, the stale list is not trusted to say "not revoked".
	is.Fetch = nil
	if err := is.CheckRevocation(ctx, sign(srv.URL+"/iss", "bad1")); !errors.Is(err, shc.ErrNotChecked) {
		t.Errorf("stale local list, no fetching: %v, want ErrNotChecked", err)
	}
	// An issuer that publishes no list.
	is = &shc.Issuers{Fetch: &jwks.Cache{}}
	if err := is.CheckRevocation(ctx, sign(srv.URL+"/other", "bad1")); err != nil {
		t.Errorf("no list published: %v", err)
	}
}
