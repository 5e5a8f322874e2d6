// Package fhir holds the small FHIR vocabulary every layer shares:
// OperationOutcome errors with their HTTP status, instants, ids and
// references.
package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
)

// Issue is one OperationOutcome issue.
type Issue struct {
	// Severity is fatal, error, warning or information.
	Severity string
	// Code is the IssueType code (invalid, structure, required, value,
	// not-found, conflict, forbidden, processing...).
	Code string
	// Diagnostics is the human-readable explanation.
	Diagnostics string
	// Expression locates the problem (FHIRPath, e.g. "Patient.birthDate").
	Expression []string
	// Line is the 1-based input line when known (imports, NDJSON bodies).
	Line int
}

// Error is an error that carries an HTTP status and OperationOutcome
// issues; every error a client sees is one of these.
type Error struct {
	Status int
	Issues []Issue
	// Err is the underlying cause, kept for logs (not sent to clients).
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, is := range e.Issues {
		if i > 0 {
			b.WriteString("; ")
		}
		if len(is.Expression) > 0 {
			b.WriteString(strings.Join(is.Expression, ", "))
			b.WriteString(": ")
		}
		b.WriteString(is.Diagnostics)
	}
	if e.Err != nil && b.Len() == 0 {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf makes an Error with one issue of severity error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Issues: []Issue{{Severity: "error", Code: code, Diagnostics: fmt.Sprintf(format, args...)}}}
}

// AtPath adds an expression (location) to every issue of e and returns e.
func (e *Error) AtPath(expr string) *Error {
	for i := range e.Issues {
		e.Issues[i].Expression = append(e.Issues[i].Expression, expr)
	}
	return e
}

// Shorthands for the common client errors.
var (
	// BadRequest is 400 with issue code invalid.
	BadRequest = func(format string, args ...any) *Error {
		return Errorf(http.StatusBadRequest, "invalid", format, args...)
	}
	// NotFound is 404 with issue code not-found.
	NotFound = func(format string, args ...any) *Error {
		return Errorf(http.StatusNotFound, "not-found", format, args...)
	}
	// Forbidden is 403 with issue code forbidden.
	Forbidden = func(format string, args ...any) *Error {
		return Errorf(http.StatusForbidden, "forbidden", format, args...)
	}
	// Conflict is 409 with issue code conflict.
	Conflict = func(format string, args ...any) *Error {
		return Errorf(http.StatusConflict, "conflict", format, args...)
	}
)

// AsError converts any error into an *Error: FHIR errors pass through,
// anything else becomes a 500 whose details stay in the server log.
func AsError(err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	return &Error{Status: http.StatusInternalServerError, Err: err,
		Issues: []Issue{{Severity: "error", Code: "exception", Diagnostics: "internal server error"}}}
}

// OutcomeJSON renders issues as an OperationOutcome resource.
func OutcomeJSON(issues []Issue) []byte {
	return Outcome(issues).Marshal()
}

// Outcome builds an OperationOutcome resource tree.
func Outcome(issues []Issue) *fhirjson.Value {
	arr := fhirjson.NewArray()
	arr.Items = []*fhirjson.Value{}
	for _, is := range issues {
		o := fhirjson.NewObject(
			fhirjson.Field{Name: "severity", Value: fhirjson.NewString(orDefault(is.Severity, "error"))},
			fhirjson.Field{Name: "code", Value: fhirjson.NewString(orDefault(is.Code, "processing"))},
		)
		diag := is.Diagnostics
		if is.Line > 0 {
			diag = fmt.Sprintf("line %d: %s", is.Line, diag)
		}
		if diag != "" {
			o.Set("diagnostics", fhirjson.NewString(diag))
		}
		if len(is.Expression) > 0 {
			ex := fhirjson.NewArray()
			for _, e := range is.Expression {
				ex.Items = append(ex.Items, fhirjson.NewString(e))
			}
			o.Set("expression", ex)
		}
		arr.Items = append(arr.Items, o)
	}
	if len(arr.Items) == 0 {
		arr.Items = append(arr.Items, fhirjson.NewObject(
			fhirjson.Field{Name: "severity", Value: fhirjson.NewString("information")},
			fhirjson.Field{Name: "code", Value: fhirjson.NewString("informational")},
			fhirjson.Field{Name: "diagnostics", Value: fhirjson.NewString("ok")},
		))
	}
	return fhirjson.NewObject(
		fhirjson.Field{Name: "resourceType", Value: fhirjson.NewString("OperationOutcome")},
		fhirjson.Field{Name: "issue", Value: arr},
	)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// ParseOutcome reads the issues of an OperationOutcome's JSON; ok is false
// when b is not one. An issue without diagnostics gets its details.text.
func ParseOutcome(b []byte) (issues []Issue, ok bool) {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity    string                `json:"severity"`
			Code        string                `json:"code"`
			Diagnostics string                `json:"diagnostics"`
			Details     struct{ Text string } `json:"details"`
			Expression  []string              `json:"expression"`
		} `json:"issue"`
	}
	if json.Unmarshal(b, &oo) != nil || oo.ResourceType != "OperationOutcome" {
		return nil, false
	}
	for _, is := range oo.Issue {
		d := is.Diagnostics
		if d == "" {
			d = is.Details.Text
		}
		issues = append(issues, Issue{Severity: is.Severity, Code: is.Code, Diagnostics: d, Expression: is.Expression})
	}
	return issues, true
}

// Text is the issue in one line: its diagnostics (or code) and where.
func (i Issue) Text() string {
	s := i.Diagnostics
	if s == "" {
		s = i.Code
	}
	if len(i.Expression) > 0 {
		s += " (at " + strings.Join(i.Expression, ", ") + ")"
	}
	return s
}
