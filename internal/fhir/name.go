package fhir

import (
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
)

// PatientName is a display name from a Patient (or any resource with a
// HumanName list in "name"): the first name's text, or its given names
// and family joined by spaces; "" when it has none.
func PatientName(v *fhirjson.Value) string {
	names := v.Get("name")
	if names == nil || names.Kind != fhirjson.Array || len(names.Items) == 0 {
		return ""
	}
	n := names.Items[0]
	if t := n.GetString("text"); t != "" {
		return t
	}
	var parts []string
	if g := n.Get("given"); g != nil && g.Kind == fhirjson.Array {
		for _, it := range g.Items {
			if it.Kind == fhirjson.String {
				parts = append(parts, it.Str)
			}
		}
	}
	if f := n.GetString("family"); f != "" {
		parts = append(parts, f)
	}
	return strings.Join(parts, " ")
}
