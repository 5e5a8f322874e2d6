package shl

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
)

//go:embed viewer/viewer.html
var viewerHTML string

//go:embed viewer/viewer.js
var viewerJS string

// viewerPage is the viewer with its script inlined, and viewerCSP the
// Content-Security-Policy that allows that script only (by hash), no
// external scripts, styles, fonts or images, and fetches to any SHL
// server (a link may point anywhere).
var viewerPage, viewerCSP = func() (string, string) {
	sum := sha256.Sum256([]byte(viewerJS))
	page := strings.Replace(viewerHTML, "{{SCRIPT}}", viewerJS, 1)
	csp := "default-src 'none'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; style-src 'unsafe-inline'; " +
		"img-src data:; connect-src *; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
	return page, csp
}()

// handleViewer serves the viewer page. The link follows "#" and so never
// reaches this server.
func handleViewer(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", viewerCSP)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Length", strconv.Itoa(len(viewerPage)))
	w.Write([]byte(viewerPage))
}
