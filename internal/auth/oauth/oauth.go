// Package oauth holds the OAuth 2.0 error type shared by the token endpoint,
// client authentication and bearer-token checks.
//
// Every failure that a client may see carries an RFC 6749 section 5.2 (or RFC
// 6750 section 3.1) error code and a description that is safe to return: it
// says what was wrong without echoing secrets or internal details. The
// underlying cause, which may hold such details, is kept separately for logs.
package oauth

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes from RFC 6749 section 5.2 and RFC 6750 section 3.1. They are
// strings rather than a named type so handlers can write them into JSON as-is.
const (
	InvalidRequest       = "invalid_request"
	InvalidClient        = "invalid_client"
	InvalidGrant         = "invalid_grant"
	UnauthorizedClient   = "unauthorized_client"
	UnsupportedGrantType = "unsupported_grant_type"
	InvalidScope         = "invalid_scope"
	AccessDenied         = "access_denied"
	ServerError          = "server_error"
	InvalidToken         = "invalid_token"
	InsufficientScope    = "insufficient_scope"
)

// Error is an OAuth error: Code and Description may be sent to the client;
// Cause is for logs only, because it can name internal hosts or key material
// details that a client has no business seeing.
type Error struct {
	Code        string
	Description string
	Cause       error
}

// Errorf returns an *Error with the given code and a formatted description.
// The description must not contain secrets: it is meant for the client.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error whose Cause is err, so logs keep the full chain while
// the client sees only code and description.
func Wrap(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...), Cause: err}
}

// Error reports code, description and cause for logs.
func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Description, e.Cause)
	}
	return e.Code + ": " + e.Description
}

// Unwrap exposes the cause to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Cause }

// HTTPStatus is the status code RFC 6749 and RFC 6750 prescribe for the
// error: 401 for failed client authentication and bad bearer tokens, 403 for
// insufficient scope, 500 for server errors, 400 otherwise.
func (e *Error) HTTPStatus() int {
	switch e.Code {
	case InvalidClient, InvalidToken:
		return http.StatusUnauthorized
	case InsufficientScope, AccessDenied:
		return http.StatusForbidden
	case ServerError:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

// Code returns the OAuth error code carried by err, or ServerError when err
// is not (and does not wrap) an *Error: an unexpected failure must not be
// reported to a client as its own fault.
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ServerError
}
