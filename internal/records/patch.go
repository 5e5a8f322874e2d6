package records

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
)

// patchOp is one JSON Patch (RFC 6902) operation.
type patchOp struct {
	op, path, from string
	value          *fhirjson.Value
	index          int
}

func parsePatch(body []byte) ([]patchOp, error) {
	doc, err := parseAny(body)
	if err != nil {
		return nil, err
	}
	if doc.Kind != fhirjson.Array {
		return nil, fhir.BadRequest("a JSON Patch document must be an array of operations")
	}
	ops := make([]patchOp, 0, len(doc.Items))
	for i, it := range doc.Items {
		if it.Kind != fhirjson.Object {
			return nil, fhir.BadRequest("patch operation %d is not an object", i)
		}
		op := patchOp{op: it.GetString("op"), path: it.GetString("path"), from: it.GetString("from"), value: it.Get("value"), index: i}
		switch op.op {
		case "add", "replace", "test":
			if op.value == nil {
				return nil, fhir.BadRequest("patch operation %d (%s) needs a value", i, op.op)
			}
		case "remove":
		case "move", "copy":
			if it.Get("from") == nil {
				return nil, fhir.BadRequest("patch operation %d (%s) needs from", i, op.op)
			}
		default:
			return nil, fhir.BadRequest("patch operation %d has unknown op %q", i, op.op)
		}
		if it.Get("path") == nil {
			return nil, fhir.BadRequest("patch operation %d has no path", i)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

func parseAny(body []byte) (*fhirjson.Value, error) {
	v, err := fhirjson.Parse(body)
	if err != nil {
		return nil, fhir.BadRequest("the body is not valid JSON: %v", err)
	}
	return v, nil
}

func patchErr(op patchOp, format string, args ...any) error {
	return fhir.Errorf(http.StatusUnprocessableEntity, "processing", "patch operation %d (%s %s): %s", op.index, op.op, op.path, fmt.Sprintf(format, args...))
}

// pointer splits a JSON Pointer into unescaped tokens.
func pointer(p string) ([]string, bool) {
	if p == "" {
		return nil, true
	}
	if !strings.HasPrefix(p, "/") {
		return nil, false
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, true
}

// applyPatch applies ops to doc (modifying it) and returns the result.
func applyPatch(doc *fhirjson.Value, ops []patchOp) (*fhirjson.Value, error) {
	for _, op := range ops {
		var err error
		switch op.op {
		case "add":
			doc, err = patchAdd(doc, op, op.path, op.value.Clone())
		case "remove":
			_, doc, err = patchRemove(doc, op, op.path)
		case "replace":
			if _, err = patchGet(doc, op, op.path); err == nil {
				_, doc, err = patchRemove(doc, op, op.path)
				if err == nil {
					doc, err = patchAdd(doc, op, op.path, op.value.Clone())
				}
			}
		case "move":
			var v *fhirjson.Value
			v, doc, err = patchRemove(doc, op, op.from)
			if err == nil {
				doc, err = patchAdd(doc, op, op.path, v)
			}
		case "copy":
			var v *fhirjson.Value
			if v, err = patchGet(doc, op, op.from); err == nil {
				doc, err = patchAdd(doc, op, op.path, v.Clone())
			}
		case "test":
			var v *fhirjson.Value
			if v, err = patchGet(doc, op, op.path); err == nil && !fhirjson.Equal(v, op.value) {
				err = patchErr(op, "test failed: the value differs")
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return doc, nil
}

// walk returns the parent container of the location named by path and the
// last token.
func walk(doc *fhirjson.Value, op patchOp, path string) (*fhirjson.Value, string, error) {
	toks, ok := pointer(path)
	if !ok {
		return nil, "", patchErr(op, "%q is not a JSON Pointer", path)
	}
	if len(toks) == 0 {
		return nil, "", nil
	}
	cur := doc
	for _, t := range toks[:len(toks)-1] {
		next, err := child(cur, op, t)
		if err != nil {
			return nil, "", err
		}
		cur = next
	}
	return cur, toks[len(toks)-1], nil
}

func child(v *fhirjson.Value, op patchOp, tok string) (*fhirjson.Value, error) {
	switch v.Kind {
	case fhirjson.Object:
		if c := v.Get(tok); c != nil {
			return c, nil
		}
	case fhirjson.Array:
		i, err := strconv.Atoi(tok)
		if err == nil && i >= 0 && i < len(v.Items) {
			return v.Items[i], nil
		}
	}
	return nil, patchErr(op, "the path does not exist (at %q)", tok)
}

func patchGet(doc *fhirjson.Value, op patchOp, path string) (*fhirjson.Value, error) {
	parent, last, err := walk(doc, op, path)
	if err != nil {
		return nil, err
	}
	if parent == nil {
		return doc, nil
	}
	return child(parent, op, last)
}

func patchAdd(doc *fhirjson.Value, op patchOp, path string, val *fhirjson.Value) (*fhirjson.Value, error) {
	parent, last, err := walk(doc, op, path)
	if err != nil {
		return nil, err
	}
	if parent == nil {
		return val, nil
	}
	switch parent.Kind {
	case fhirjson.Object:
		parent.Set(last, val)
	case fhirjson.Array:
		i := len(parent.Items)
		if last != "-" {
			n, err := strconv.Atoi(last)
			if err != nil || n < 0 || n > len(parent.Items) {
				return nil, patchErr(op, "array index %q out of range", last)
			}
			i = n
		}
		parent.Items = append(parent.Items, nil)
		copy(parent.Items[i+1:], parent.Items[i:])
		parent.Items[i] = val
	default:
		return nil, patchErr(op, "cannot add inside a %s", parent.Kind)
	}
	return doc, nil
}

func patchRemove(doc *fhirjson.Value, op patchOp, path string) (*fhirjson.Value, *fhirjson.Value, error) {
	parent, last, err := walk(doc, op, path)
	if err != nil {
		return nil, nil, err
	}
	if parent == nil {
		return nil, nil, patchErr(op, "cannot remove the whole document")
	}
	v, err := child(parent, op, last)
	if err != nil {
		return nil, nil, err
	}
	if parent.Kind == fhirjson.Object {
		parent.Delete(last)
	} else {
		i, _ := strconv.Atoi(last)
		parent.Items = append(parent.Items[:i], parent.Items[i+1:]...)
	}
	return v, doc, nil
}
