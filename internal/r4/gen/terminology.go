package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

type rawConcept struct {
	Code    string       `json:"code"`
	Concept []rawConcept `json:"concept"`
}

type rawCodeSystem struct {
	URL     string       `json:"url"`
	Content string       `json:"content"`
	Concept []rawConcept `json:"concept"`
}

type rawInclude struct {
	System   string       `json:"system"`
	Concept  []rawConcept `json:"concept"`
	Filter   []any        `json:"filter"`
	ValueSet []string     `json:"valueSet"`
}

type rawValueSet struct {
	URL     string `json:"url"`
	Compose *struct {
		Include []rawInclude `json:"include"`
		Exclude []rawInclude `json:"exclude"`
	} `json:"compose"`
	Expansion *struct {
		Contains []rawContains `json:"contains"`
	} `json:"expansion"`
}

type rawContains struct {
	System   string        `json:"system"`
	Code     string        `json:"code"`
	Contains []rawContains `json:"contains"`
}

// terminology expands value sets from the ValueSets and CodeSystems at hand.
type terminology struct {
	cs   map[string]*rawCodeSystem
	vs   map[string]*rawValueSet
	done map[string]expansion
	busy map[string]bool
}

type expansion struct {
	codes, systems []string
	err            error
}

func loadTerminology(path string) (*terminology, error) {
	res, err := readBundle(path)
	if err != nil {
		return nil, err
	}
	t := &terminology{cs: map[string]*rawCodeSystem{}, vs: map[string]*rawValueSet{}, done: map[string]expansion{}, busy: map[string]bool{}}
	for i, r := range res {
		var head struct {
			ResourceType string `json:"resourceType"`
		}
		if err := json.Unmarshal(r, &head); err != nil {
			return nil, fmt.Errorf("valuesets entry %d: %w", i, err)
		}
		switch head.ResourceType {
		case "CodeSystem":
			var c rawCodeSystem
			if err := json.Unmarshal(r, &c); err != nil {
				return nil, fmt.Errorf("valuesets entry %d: %w", i, err)
			}
			t.cs[c.URL] = &c
		case "ValueSet":
			var v rawValueSet
			if err := json.Unmarshal(r, &v); err != nil {
				return nil, fmt.Errorf("valuesets entry %d: %w", i, err)
			}
			t.vs[v.URL] = &v
		}
	}
	return t, nil
}

// expand returns the codes of a value set with their systems (parallel
// slices) or an error saying why it cannot be expanded from the files.
func (t *terminology) expand(url string) ([]string, []string, error) {
	base, version, _ := strings.Cut(url, "|")
	if version != "" && version != "4.0.1" {
		// Versioned canonicals to other releases (e.g. v3 value sets of
		// 2014) are not in the package.
		if _, ok := t.vs[base]; !ok {
			return nil, nil, fmt.Errorf("value set %s is not in the definitions", url)
		}
	}
	if e, ok := t.done[base]; ok {
		return e.codes, e.systems, e.err
	}
	if t.busy[base] {
		return nil, nil, fmt.Errorf("value set %s includes itself", base)
	}
	t.busy[base] = true
	codes, systems, err := t.expandVS(base)
	delete(t.busy, base)
	t.done[base] = expansion{codes, systems, err}
	return codes, systems, err
}

func (t *terminology) expandVS(url string) ([]string, []string, error) {
	v := t.vs[url]
	if v == nil {
		return nil, nil, fmt.Errorf("value set %s is not in the definitions", url)
	}
	var set codeSet
	if v.Compose == nil {
		if v.Expansion == nil {
			return nil, nil, fmt.Errorf("value set %s has neither compose nor expansion", url)
		}
		var walk func([]rawContains)
		walk = func(cs []rawContains) {
			for _, c := range cs {
				if c.Code != "" {
					set.add(c.System, c.Code)
				}
				walk(c.Contains)
			}
		}
		walk(v.Expansion.Contains)
		return set.codes, set.systems, nil
	}
	for _, inc := range v.Compose.Include {
		part, err := t.include(url, inc)
		if err != nil {
			return nil, nil, err
		}
		for i := range part.codes {
			set.add(part.systems[i], part.codes[i])
		}
	}
	for _, exc := range v.Compose.Exclude {
		part, err := t.include(url, exc)
		if err != nil {
			return nil, nil, fmt.Errorf("exclude: %w", err)
		}
		drop := map[[2]string]bool{}
		for i := range part.codes {
			drop[[2]string{part.systems[i], part.codes[i]}] = true
		}
		var kept codeSet
		for i := range set.codes {
			if !drop[[2]string{set.systems[i], set.codes[i]}] {
				kept.add(set.systems[i], set.codes[i])
			}
		}
		set = kept
	}
	if len(set.codes) == 0 {
		return nil, nil, fmt.Errorf("value set %s expands to no codes", url)
	}
	return set.codes, set.systems, nil
}

func (t *terminology) include(url string, inc rawInclude) (codeSet, error) {
	var set codeSet
	if len(inc.Filter) > 0 {
		return set, fmt.Errorf("value set %s uses filters", url)
	}
	if len(inc.ValueSet) > 0 {
		if inc.System != "" || len(inc.ValueSet) > 1 {
			return set, fmt.Errorf("value set %s intersects value sets", url)
		}
		codes, systems, err := t.expand(inc.ValueSet[0])
		if err != nil {
			return set, err
		}
		for i := range codes {
			set.add(systems[i], codes[i])
		}
		return set, nil
	}
	if inc.System == "" {
		return set, errors.New("include without system or value set")
	}
	if len(inc.Concept) > 0 {
		for _, c := range inc.Concept {
			set.add(inc.System, c.Code)
		}
		return set, nil
	}
	cs := t.cs[inc.System]
	if cs == nil {
		return set, fmt.Errorf("code system %s (included whole by %s) is not in the definitions", inc.System, url)
	}
	if cs.Content != "complete" {
		return set, fmt.Errorf("code system %s is not complete (%s)", inc.System, cs.Content)
	}
	var walk func([]rawConcept)
	walk = func(cs []rawConcept) {
		for _, c := range cs {
			set.add(inc.System, c.Code)
			walk(c.Concept)
		}
	}
	walk(cs.Concept)
	return set, nil
}

// codeSet is an ordered set of (system, code) pairs.
type codeSet struct {
	codes, systems []string
	seen           map[[2]string]bool
}

func (s *codeSet) add(system, code string) {
	if s.seen == nil {
		s.seen = map[[2]string]bool{}
	}
	k := [2]string{system, code}
	if s.seen[k] {
		return
	}
	s.seen[k] = true
	s.codes = append(s.codes, code)
	s.systems = append(s.systems, system)
}
