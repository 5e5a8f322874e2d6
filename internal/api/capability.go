package api

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/r4"
)

// Capability is the CapabilityStatement under construction; features add
// to it through AddCapability hooks.
type Capability struct {
	// Instantiates are canonical CapabilityStatements this server
	// conforms to (e.g. the Bulk Data one).
	Instantiates []string
	// SearchParams lists, per resource type, the search parameters
	// really supported.
	SearchParams map[string][]CapSearchParam
	// SystemSearchParams are those supported at the system level.
	SystemSearchParams []CapSearchParam
	// Security describes the authorization (SMART) endpoints.
	Security map[string]any
	// SearchInteractions says whether search-type is supported.
	Search bool
}

// CapSearchParam is one searchParam entry.
type CapSearchParam struct {
	Name       string `json:"name"`
	Definition string `json:"definition,omitempty"`
	Type       string `json:"type"`
}

type capOperation struct {
	Name       string `json:"name"`
	Definition string `json:"definition"`
}

type capInteraction struct {
	Code string `json:"code"`
}

type capResource struct {
	Type              string           `json:"type"`
	Profile           string           `json:"profile"`
	Interaction       []capInteraction `json:"interaction"`
	Versioning        string           `json:"versioning"`
	ReadHistory       bool             `json:"readHistory"`
	UpdateCreate      bool             `json:"updateCreate"`
	ConditionalCreate bool             `json:"conditionalCreate"`
	ConditionalRead   string           `json:"conditionalRead"`
	ConditionalUpdate bool             `json:"conditionalUpdate"`
	ConditionalDelete string           `json:"conditionalDelete"`
	ReferencePolicy   []string         `json:"referencePolicy,omitempty"`
	SearchInclude     []string         `json:"searchInclude,omitempty"`
	SearchRevInclude  []string         `json:"searchRevInclude,omitempty"`
	SearchParam       []CapSearchParam `json:"searchParam,omitempty"`
	Operation         []capOperation   `json:"operation,omitempty"`
}

// serveCapability answers GET /fhir/metadata with a CapabilityStatement
// generated from what is registered.
func (s *Server) serveCapability(w http.ResponseWriter, r *http.Request) {
	if err := checkFormat(r); err != nil {
		WriteError(w, r, err)
		return
	}
	body, err := json.Marshal(s.capabilityStatement(r.URL.Query().Get("mode")))
	if err != nil {
		WriteError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	writeJSONBody(w, r, http.StatusOK, body)
}

func (s *Server) capabilityStatement(mode string) map[string]any {
	s.mu.RLock()
	hooks := append([]func(*Capability){}, s.capHooks...)
	ops := append([]*Operation{}, s.ops...)
	s.mu.RUnlock()
	c := &Capability{SearchParams: map[string][]CapSearchParam{}}
	for _, h := range hooks {
		h(c)
	}
	var resources []capResource
	for _, t := range r4.ResourceTypes() {
		codes := []string{"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create"}
		if c.Search {
			codes = append(codes, "search-type")
		}
		cr := capResource{
			Type: t, Profile: "http://hl7.org/fhir/StructureDefinition/" + t,
			Versioning: "versioned-update", ReadHistory: true, UpdateCreate: true,
			ConditionalCreate: c.Search, ConditionalRead: "modified-since", ConditionalUpdate: c.Search,
			ConditionalDelete: "not-supported", ReferencePolicy: []string{"literal", "logical"},
			SearchParam: c.SearchParams[t],
		}
		if c.Search {
			cr.ConditionalDelete = "single"
			cr.SearchInclude = []string{"*"}
			cr.SearchRevInclude = []string{"*"}
		}
		for _, code := range codes {
			cr.Interaction = append(cr.Interaction, capInteraction{code})
		}
		for _, op := range ops {
			for _, ot := range op.Types {
				if ot == t {
					cr.Operation = append(cr.Operation, capOperation{op.Name, op.Definition})
				}
			}
		}
		resources = append(resources, cr)
	}
	var sysOps []capOperation
	for _, op := range ops {
		if op.System {
			sysOps = append(sysOps, capOperation{op.Name, op.Definition})
		}
	}
	sort.Slice(sysOps, func(i, j int) bool { return sysOps[i].Name < sysOps[j].Name })
	sysInteractions := []capInteraction{{"transaction"}, {"batch"}, {"history-system"}}
	if c.Search {
		sysInteractions = append(sysInteractions, capInteraction{"search-system"})
	}
	rest := map[string]any{
		"mode":          "server",
		"documentation": "phr: personal health record server",
		"resource":      resources,
		"interaction":   sysInteractions,
	}
	if len(sysOps) > 0 {
		rest["operation"] = sysOps
	}
	if len(c.SystemSearchParams) > 0 {
		rest["searchParam"] = c.SystemSearchParams
	}
	if c.Security != nil {
		rest["security"] = c.Security
	}
	cs := map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         fhir.FormatInstant(s.started),
		"publisher":    "phr",
		"kind":         "instance",
		"software":     map[string]any{"name": "phr", "version": Version},
		"implementation": map[string]any{
			"description": "phr personal health record server",
			"url":         s.base,
		},
		"fhirVersion": r4.Version,
		"format":      []string{"application/fhir+json", "json"},
		"patchFormat": []string{"application/json-patch+json"},
		"rest":        []any{rest},
	}
	if len(c.Instantiates) > 0 {
		cs["instantiates"] = c.Instantiates
	}
	return cs
}

// Version is the software version reported in the CapabilityStatement.
var Version = "0.1.0"
