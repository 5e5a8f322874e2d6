package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/sphr"
)

// An import's source label names the system its data came from: the
// identity map, and so whether a changed resource updates what came
// before, is kept per source. Taken from the file name, the label splits
// one system's exports (hospital-2025, hospital-2026) into two sources, and
// the second's changes are stored beside the first's resources. So where
// the content says where it came from, phr import uses that instead:
//   - a Bulk Data manifest's request names the FHIR server that exported
//     the files, and its FHIR base is the label `phr clone` gives that
//     server, so a downloaded export and a clone of the server merge as one
//     source;
//   - a phr export's cover page names the server that exported it in its
//     meta.source (that server's FHIR base again);
//   - otherwise, NDJSON whose resources all name one origin in meta.source
//     (the URI of the system, without a fragment such as a request id),
//     such as this record's own export of what one source sent.

// origin is where an upload's content says it came from, and how that
// was found, for the note phr import prints.
type origin struct {
	label, why string
}

// exportBase returns the FHIR base of a Bulk Data kick-off URL
// ([base]/$export, [base]/Patient/$export, [base]/Group/[id]/$export, with
// any query), or "" when request is not one.
func exportBase(request string) string {
	u, err := url.Parse(strings.TrimSpace(request))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	p, ok := strings.CutSuffix(strings.TrimSuffix(u.Path, "/"), "/$export")
	if !ok {
		return ""
	}
	switch dir, last := path.Split(p); {
	case last == "Patient":
		p = strings.TrimSuffix(dir, "/")
	case path.Base(strings.TrimSuffix(dir, "/")) == "Group" && last != "":
		p = path.Dir(strings.TrimSuffix(dir, "/"))
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment, u.User = strings.TrimSuffix(p, "/"), "", "", "", nil
	return u.String()
}

// coverOrigin returns the server that a phr export came from, when the
// file starts with the export's cover page (the first line of NDJSON, the
// first entry of a Bundle) and that names it (sphr.CoverSource), else "".
func coverOrigin(fp string) string {
	br, done, err := openInput(fp)
	if err != nil {
		return ""
	}
	defer done()
	head, _ := br.Peek(sampleBytes)
	return sphr.HeadCoverSource(head)
}

// zipCoverOrigin is coverOrigin of the first export file of a zip or
// .sphr archive, opened with passphrase when it is encrypted
// (sphr.ArchiveCoverSource).
func zipCoverOrigin(fp, passphrase string) string {
	f, err := os.Open(fp)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	return sphr.ArchiveCoverSource(f, st.Size(), passphrase)
}

// sampleBytes is how much of a file coverOrigin reads.
const sampleBytes = 64 << 10

// metaSourceOrigin returns the origin that every resource of the NDJSON
// files names in meta.source, or "" when one lacks it or two differ. An
// origin is meta.source without its fragment, and must be an absolute URI:
// a bare fragment (a server's request id) says nothing of the system. The
// files are read through, up to the first resource that disagrees: an
// origin taken from a sample could name a system that later resources
// do not come from (an export of a record merged from several sources
// lists them by type), and the label becomes their meta.source, which is
// provenance. Reading costs a fraction of importing (about 10 ms a MB).
func metaSourceOrigin(files []string) string {
	var found string
	for _, fp := range files {
		o, ok := fileOrigin(fp, found)
		if !ok {
			return ""
		}
		found = o
	}
	return found
}

// fileOrigin returns the one origin of the resources of one NDJSON file
// (want, when that is not ""), and false when there is none.
func fileOrigin(fp, want string) (string, bool) {
	br, done, err := openInput(fp)
	if err != nil {
		return "", false
	}
	defer done()
	var r struct {
		Meta struct {
			Source string `json:"source"`
		} `json:"meta"`
	}
	for first := true; ; first = false {
		line, err := br.ReadBytes('\n')
		if first {
			line = importer.TrimBOM(line)
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			r.Meta.Source = ""
			if json.Unmarshal(line, &r) != nil {
				return "", false
			}
			o := sourceOrigin(r.Meta.Source)
			if o == "" || want != "" && o != want {
				return "", false
			}
			want = o
		}
		if err == io.EOF {
			return want, want != ""
		}
		if err != nil {
			return "", false
		}
	}
}

// sourceOrigin returns meta.source without its fragment when that is an
// absolute URI, else "".
func sourceOrigin(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "#")
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" && u.Opaque == "" {
		return ""
	}
	return strings.TrimSuffix(s, "/")
}
