// Package sphr writes and reads .sphr files, the PHR IG's "secure PHR": a ZIP
// archive holding a .phr file (FHIR resources as NDJSON) and the documents its
// resources point at, encrypted with WinZip AES-256 (internal/zipaes) so that
// 7-Zip and other common tools open it with the passphrase.
//
// Layout written: <name>/<name>.phr plus the attachment files beside it, which
// the resources reference by relative URL ("./Binary-123.pdf"), as the IG's
// WilliamSim example does. Two kinds of content become files:
//
//   - the content of a Binary resource: its line keeps every element but data,
//     and carries instead "_data":{"extension":[{"url":ExtFile,"valueUrl":"./f"}]}
//     (a primitive extension without a value, which FHIR JSON allows);
//   - the inline data of an Attachment (DocumentReference.content.attachment,
//     Media.content, Observation.valueAttachment...) longer than InlineLimit
//     base64 characters: data is replaced in place by the same "_data"
//     extension, and url is set to the file when the attachment had none.
//
// Restore undoes exactly that, so an export read back gives the resources and
// the attachment bytes that were exported. Attachments of other archives that
// point at a file of the archive by relative URL without the extension (the
// IG's examples) are re-attached too: Restore inlines the file as data.
package sphr

import (
	"path"
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
)

// Format constants shared by the writer, the reader and the importer.
const (
	// ExtFile marks a base64Binary element whose content was moved to a file
	// of the archive; valueUrl is the file, relative to the .phr file.
	ExtFile = "http://phr-project.github.io/fhir/StructureDefinition/sphr-file"
	// CoverTagSystem and CoverTagCode tag the Composition cover page an export
	// generates (meta.tag), so that an import can tell it from stored data.
	CoverTagSystem = "http://phr-project.github.io/fhir/CodeSystem/phr-export"
	CoverTagCode   = "cover-page"
	// DefaultInlineLimit is the length of base64 attachment data above which
	// the writer moves the content to a file (48 KiB of content).
	DefaultInlineLimit = 64 << 10
)

// SafeName turns s into a file name of letters, digits, '-', '_' and '.':
// other characters are dropped, runs of spaces become '-'. It returns
// fallback when nothing is left.
func SafeName(s, fallback string) string {
	var b strings.Builder
	dash := false
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.':
			b.WriteRune(r)
			dash = false
		case r == '-' || r == ' ' || r == '/':
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
				dash = true
			}
		}
	}
	out := strings.Trim(b.String(), "-.")
	if len(out) > 80 {
		out = out[:80]
	}
	if out == "" {
		return fallback
	}
	return out
}

// extensionForType returns a file extension for a MIME type.
func extensionForType(ct string) string {
	ct = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	switch ct {
	case "application/pdf":
		return ".pdf"
	case "image/jpeg", "image/jpg":
		return ".jpg"
	case "image/png":
		return ".png"
	case "image/gif":
		return ".gif"
	case "image/tiff":
		return ".tif"
	case "image/svg+xml":
		return ".svg"
	case "text/plain":
		return ".txt"
	case "text/html":
		return ".html"
	case "text/xml", "application/xml", "application/hl7-v3+xml", "application/fhir+xml":
		return ".xml"
	case "application/json", "application/fhir+json":
		return ".json"
	case "application/dicom":
		return ".dcm"
	case "text/rtf", "application/rtf":
		return ".rtf"
	case "audio/mpeg":
		return ".mp3"
	case "video/mp4":
		return ".mp4"
	}
	return ".bin"
}

// fileExtension returns the ExtFile value of a "_data" element, or "".
func fileExtension(v *fhirjson.Value) string {
	exts := v.Get("extension")
	if exts == nil || exts.Kind != fhirjson.Array {
		return ""
	}
	for _, e := range exts.Items {
		if e.GetString("url") == ExtFile {
			return e.GetString("valueUrl")
		}
	}
	return ""
}

// removeFileExtension drops the ExtFile extension from a "_data" element
// and reports whether the element is now empty.
func removeFileExtension(v *fhirjson.Value) (empty bool) {
	exts := v.Get("extension")
	if exts != nil && exts.Kind == fhirjson.Array {
		items := exts.Items[:0]
		for _, e := range exts.Items {
			if e.GetString("url") != ExtFile {
				items = append(items, e)
			}
		}
		exts.Items = items
		if len(items) == 0 {
			v.Delete("extension")
		}
	}
	return len(v.Fields) == 0
}

func fileRef(rel string) *fhirjson.Value {
	return fhirjson.NewObject(fhirjson.Field{Name: "extension", Value: fhirjson.NewArray(fhirjson.NewObject(
		fhirjson.Field{Name: "url", Value: fhirjson.NewString(ExtFile)},
		fhirjson.Field{Name: "valueUrl", Value: fhirjson.NewString(rel)},
	))})
}

// resolve turns a URL relative to the .phr file at phrPath into an archive
// path; ok is false for absolute URLs and paths leaving the archive.
func resolve(phrPath, url string) (string, bool) {
	if url == "" || strings.Contains(url, ":") || strings.HasPrefix(url, "/") || strings.HasPrefix(url, "#") {
		return "", false
	}
	p := path.Join(path.Dir(phrPath), url)
	if p == "." || strings.HasPrefix(p, "../") || p == ".." {
		return "", false
	}
	return p, true
}

func indexOf(v *fhirjson.Value, name string) int {
	for i := range v.Fields {
		if v.Fields[i].Name == name {
			return i
		}
	}
	return -1
}

func insertAt(v *fhirjson.Value, pos int, f fhirjson.Field) {
	if pos < 0 || pos > len(v.Fields) {
		pos = len(v.Fields)
	}
	v.Fields = append(v.Fields, fhirjson.Field{})
	copy(v.Fields[pos+1:], v.Fields[pos:])
	v.Fields[pos] = f
}
