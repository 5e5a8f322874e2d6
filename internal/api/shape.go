package api

import (
	"net/http"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
)

// Shape applies _summary (true, text, data, false) and _elements to a
// resource, tagging the result SUBSETTED when anything was left out.
// Mandatory elements (min >= 1), id and meta are always kept.
func Shape(res *fhirjson.Value, typ, summary, elements string) (*fhirjson.Value, error) {
	if summary == "" && elements == "" || summary == "false" {
		return res, nil
	}
	if summary != "" && elements != "" {
		return nil, fhir.BadRequest("_summary and _elements cannot be combined")
	}
	keep := func(name string) bool { return true }
	switch summary {
	case "":
		wanted := map[string]bool{}
		for _, e := range strings.Split(elements, ",") {
			e = strings.TrimSpace(e)
			e = strings.TrimPrefix(e, typ+".")
			if e != "" {
				wanted[strings.SplitN(e, ".", 2)[0]] = true
			}
		}
		keep = func(name string) bool { return wanted[name] || mandatory(typ, name) }
	case "true":
		keep = func(name string) bool { return isSummary(typ, name) || mandatory(typ, name) }
	case "text":
		keep = func(name string) bool { return name == "text" || mandatory(typ, name) }
	case "data":
		keep = func(name string) bool { return name != "text" }
	case "count":
		return nil, fhir.BadRequest("_summary=count is only meaningful for searches")
	default:
		return nil, fhir.Errorf(http.StatusBadRequest, "invalid", "_summary must be true, text, data, count or false, not %q", summary)
	}
	out := fhirjson.NewObject()
	dropped := false
	for _, f := range res.Fields {
		name := strings.TrimPrefix(f.Name, "_")
		if f.Name == "resourceType" || name == "id" || name == "meta" || keep(name) {
			out.Fields = append(out.Fields, f)
		} else {
			dropped = true
		}
	}
	if dropped {
		tagSubsetted(out)
	}
	return out, nil
}

func mandatory(typ, name string) bool {
	e := element(typ, name)
	return e != nil && e.Min > 0
}

func isSummary(typ, name string) bool {
	e := element(typ, name)
	return e != nil && e.Summary
}

// element finds the definition of a top-level element (choice elements
// such as valueQuantity match value[x]).
func element(typ, name string) *r4.Element {
	if e := r4.LookupElement(typ + "." + name); e != nil {
		return e
	}
	for i := len(name) - 1; i > 0; i-- {
		if name[i] >= 'A' && name[i] <= 'Z' {
			if e := r4.LookupElement(typ + "." + name[:i] + "[x]"); e != nil {
				return e
			}
		}
	}
	return nil
}

// tagSubsetted adds the SUBSETTED security tag to meta.tag.
func tagSubsetted(res *fhirjson.Value) {
	meta := res.Get("meta")
	if meta == nil {
		meta = fhirjson.NewObject()
		res.SetAfter("meta", meta, "id", "resourceType")
	} else {
		meta = meta.Clone()
		res.Set("meta", meta)
	}
	tags := meta.Get("tag")
	if tags == nil || tags.Kind != fhirjson.Array {
		tags = fhirjson.NewArray()
		meta.Set("tag", tags)
	}
	tags.Items = append(tags.Items, fhirjson.NewObject(
		fhirjson.Field{Name: "system", Value: fhirjson.NewString("http://terminology.hl7.org/CodeSystem/v3-ObservationValue")},
		fhirjson.Field{Name: "code", Value: fhirjson.NewString("SUBSETTED")},
	))
}
