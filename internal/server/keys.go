package server

import (
	"context"
	"fmt"

	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/store"
)

// Settings keys in the store.
const (
	kvSigningKey = "auth/signing-key"
	kvServerID   = "server/id"
)

// TokenIssuer loads (creating on first use) the server's signing key and
// identity from the store and returns the issuer of its access tokens.
// Tokens name the server by a stable id kept in the store, not by its URL,
// so that tokens made with `phr token` work whatever --base-url the server
// runs with, and every replica sharing the database accepts them.
func TokenIssuer(ctx context.Context, s store.Store) (*token.Issuer, error) {
	id, err := s.InitKV(ctx, kvServerID, []byte("urn:phr:"+fhir.NewID()))
	if err != nil {
		return nil, err
	}
	fresh, err := token.GenerateKey("")
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	pemBytes, err := fresh.MarshalPEM()
	if err != nil {
		return nil, fmt.Errorf("encode signing key: %w", err)
	}
	stored, err := s.InitKV(ctx, kvSigningKey, pemBytes)
	if err != nil {
		return nil, err
	}
	key, err := token.ParseKey(stored)
	if err != nil {
		return nil, fmt.Errorf("read the server's signing key: %w", err)
	}
	return token.New(token.Config{Issuer: string(id), Audience: string(id), Signing: key})
}
