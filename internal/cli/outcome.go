package cli

import (
	"encoding/json"
	"io"
	"strings"
)

// outcomeText turns a server's error body (an OperationOutcome, or any
// text) into one line for the terminal: each issue's location and
// diagnostics.
func outcomeText(b []byte) string {
	var oo struct {
		Issue []struct {
			Diagnostics string   `json:"diagnostics"`
			Expression  []string `json:"expression"`
		} `json:"issue"`
	}
	if json.Unmarshal(b, &oo) != nil || len(oo.Issue) == 0 {
		return strings.TrimSpace(string(b[:min(len(b), 300)]))
	}
	var parts []string
	for _, is := range oo.Issue {
		s := is.Diagnostics
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
