package oauth

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
)

func TestErrorCodeAndStatus(t *testing.T) {
	cases := []struct {
		code   string
		status int
	}{
		{InvalidClient, http.StatusUnauthorized},
		{InvalidToken, http.StatusUnauthorized},
		{InsufficientScope, http.StatusForbidden},
		{InvalidScope, http.StatusBadRequest},
		{InvalidRequest, http.StatusBadRequest},
		{ServerError, http.StatusInternalServerError},
	}
	for _, c := range cases {
		e := Errorf(c.code, "thing %d was wrong", 7)
		if got := e.HTTPStatus(); got != c.status {
			t.Errorf("%s: status %d, want %d", c.code, got, c.status)
		}
		wrapped := fmt.Errorf("token endpoint: %w", e)
		if got := Code(wrapped); got != c.code {
			t.Errorf("Code(wrapped %s) = %s", c.code, got)
		}
	}
	if got := Code(io.EOF); got != ServerError {
		t.Errorf("Code(io.EOF) = %s, want server_error", got)
	}
}

func TestWrapKeepsCauseOutOfDescription(t *testing.T) {
	e := Wrap(InvalidClient, io.ErrUnexpectedEOF, "could not fetch the client's JWKS")
	if !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Fatal("cause not reachable through errors.Is")
	}
	if e.Description != "could not fetch the client's JWKS" {
		t.Fatalf("description %q leaks more than intended", e.Description)
	}
	if e.Error() != "invalid_client: could not fetch the client's JWKS: unexpected EOF" {
		t.Fatalf("Error() = %q", e.Error())
	}
}
