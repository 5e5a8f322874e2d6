package search

import (
	"context"
	"net/url"
)

// PageSQL returns the statement and arguments of the first page of a
// search of typ, as a caller without restrictions would have it run.
func (e *Engine) PageSQL(ctx context.Context, typ string, v url.Values) (string, []any, error) {
	q, err := parse([]string{typ}, v, false)
	if err != nil {
		return "", nil, err
	}
	b, err := e.pageSQL(ctx, &plan{q: q}, nil, q.count, true)
	if err != nil {
		return "", nil, err
	}
	return b.sb.String(), b.args, nil
}
