package cli

import (
	"io"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
)

// outcomeText turns a server's error body (an OperationOutcome, or any
// text) into one line for the terminal: each issue's location and
// diagnostics.
func outcomeText(b []byte) string {
	issues, ok := fhir.ParseOutcome(b)
	if !ok || len(issues) == 0 {
		return strings.TrimSpace(string(b[:min(len(b), 300)]))
	}
	var parts []string
	for _, is := range issues {
		s := is.Diagnostics
		if s == "" {
			s = is.Code
		}
		// The location, unless the diagnostics name it already (an
		// import's "file line 3, Bundle.entry[2]: ...").
		if e := strings.Join(is.Expression, ", "); e != "" && !strings.Contains(s, e+":") {
			s = e + ": " + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// outcomeTextFrom is outcomeText over (at most 64 KiB of) a response body.
func outcomeTextFrom(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	return outcomeText(b)
}
