package importer

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/store"
)

// TestImportErrorStatus checks the responses of failed imports: a lost
// race with another import (store.ErrConflict, as redo reports it) is a
// 409 that says what happened and that importing again completes it; a FHIR
// error keeps its status; anything else is a 500 without details.
func TestImportErrorStatus(t *testing.T) {
	race := fmt.Errorf("%w: another import wrote Patient/a as Patient/x while this one was writing it as Patient/y (in.ndjson line 3); nothing of the chunk was written, and importing again completes it", store.ErrConflict)
	fe := importError(fmt.Errorf("write chunk: %w", race))
	if fe.Status != http.StatusConflict || len(fe.Issues) != 1 || fe.Issues[0].Code != "conflict" ||
		!strings.Contains(fe.Issues[0].Diagnostics, "importing again completes it") {
		t.Errorf("lost race: status %d, issues %+v; want 409 conflict naming the remedy", fe.Status, fe.Issues)
	}
	if fe := importError(fhir.BadRequest("bad line")); fe.Status != http.StatusBadRequest {
		t.Errorf("FHIR error: status %d, want 400", fe.Status)
	}
	fe = importError(errors.New("disk full at /secret/path"))
	if fe.Status != http.StatusInternalServerError || strings.Contains(fe.Issues[0].Diagnostics, "secret") {
		t.Errorf("other error: status %d, issues %+v; want a 500 without details", fe.Status, fe.Issues)
	}
}

// TestSpoolReadFailure: an archive upload that cannot be read to its end
// is the client's 400, naming the upload; a FHIR error of the body (bad
// gzip data) keeps its status.
func TestSpoolReadFailure(t *testing.T) {
	broken := io.MultiReader(strings.NewReader("PK\x03\x04 part of an archive"), iotest.ErrReader(io.ErrUnexpectedEOF))
	_, _, err := spool(broken, "record.sphr")
	fe := importError(err)
	if fe.Status != http.StatusBadRequest || !strings.Contains(fe.Issues[0].Diagnostics, "record.sphr: the upload could not be read to its end: unexpected EOF") {
		t.Errorf("broken upload: %d %+v", fe.Status, fe.Issues)
	}
	_, _, err = spool(iotest.ErrReader(fhir.Errorf(400, "invalid", "bad gzip data")), "record.sphr")
	if fe := importError(err); fe.Status != http.StatusBadRequest || !strings.Contains(fe.Issues[0].Diagnostics, "record.sphr: bad gzip data") {
		t.Errorf("FHIR error of the body: %d %+v", fe.Status, fe.Issues)
	}
	f, n, err := spool(strings.NewReader("PK\x03\x04 whole"), "record.sphr")
	if err != nil || n != 10 {
		t.Fatal(n, err)
	}
	f.Close()
	os.Remove(f.Name())
}
