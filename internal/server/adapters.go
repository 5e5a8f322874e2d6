package server

import (
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/validate"
)

// validator adapts the validate package to records.Validator.
type validator struct{}

func (validator) Validate(res *fhirjson.Value, conditionalRefs bool) []fhir.Issue {
	issues := validate.Options{AllowConditionalReferences: conditionalRefs}.Resource(res)
	if len(issues) == 0 {
		return nil
	}
	out := make([]fhir.Issue, len(issues))
	for i, is := range issues {
		out[i] = fhir.Issue{Severity: string(is.Severity), Code: is.Code, Diagnostics: is.Message}
		if is.Path != "" {
			out[i].Expression = []string{is.Path}
		}
	}
	return out
}

// indexer adapts the index package to records.Indexer.
type indexer struct{}

func (indexer) Extract(typ string, res *fhirjson.Value) (*index.Entries, error) {
	e, err := index.Extract(typ, res)
	if err != nil {
		return nil, err
	}
	return &e, nil
}
