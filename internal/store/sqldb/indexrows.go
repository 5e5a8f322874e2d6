package sqldb

import (
	"fmt"

	"github.com/phr-project/phr/internal/index"
)

// rowSink receives index rows value by value: start begins a row of an
// index table (tToken, ...) with its resource and parameter ids, and the
// row's other values follow in the order of the table's columns
// (indexTables).
type rowSink interface {
	start(table int, rid, pid int64)
	str(s string)
	i64(v int64)
	f64(v float64)
	// target writes the target_rid of a reference row: the rid of the
	// resource typ/id, or 0 when it is not known (see
	// migrations/*/0014_ref_target_rid.sql).
	target(typ, id string)
}

// writeIndexRows passes the index rows of e (resource rid) to s, the
// parameter ids from pid, and stops at pid's first error. It is the one
// place that knows which entry field goes in which column; Tx.queue (rows
// of values) and PrepareNew (PostgreSQL COPY data) both write through it.
func writeIndexRows(e *index.Entries, rid int64, pid func(code string) (int64, error), s rowSink) error {
	start := func(table int, param string) error {
		id, err := pid(param)
		if err != nil {
			return err
		}
		s.start(table, rid, id)
		return nil
	}
	for _, x := range e.Tokens {
		if err := start(tToken, x.Param); err != nil {
			return err
		}
		s.str(x.System)
		s.str(x.Code)
		s.str(x.Text)
		s.str(x.TypeSystem)
		s.str(x.TypeCode)
	}
	for _, x := range e.Strings {
		if err := start(tString, x.Param); err != nil {
			return err
		}
		s.str(x.Norm)
		s.str(x.Exact)
	}
	for _, x := range e.Dates {
		if err := start(tDate, x.Param); err != nil {
			return err
		}
		s.i64(x.Low)
		s.i64(x.High)
	}
	for _, x := range e.Refs {
		if err := start(tRef, x.Param); err != nil {
			return err
		}
		s.str(x.Type)
		s.str(x.ID)
		s.str(x.Version)
		s.str(x.URL)
		s.str(x.IdentifierSystem)
		s.str(x.IdentifierValue)
		s.target(x.Type, x.ID)
	}
	for _, x := range e.Quantities {
		if err := start(tQuantity, x.Param); err != nil {
			return err
		}
		s.f64(x.Value)
		s.f64(x.Low)
		s.f64(x.High)
		s.str(x.Text)
		s.str(x.System)
		s.str(x.Code)
		s.str(x.Unit)
	}
	for _, x := range e.Numbers {
		if err := start(tNumber, x.Param); err != nil {
			return err
		}
		s.f64(x.Value)
		s.f64(x.Low)
		s.f64(x.High)
		s.str(x.Text)
	}
	for _, x := range e.URIs {
		if err := start(tURI, x.Param); err != nil {
			return err
		}
		s.str(x.Value)
	}
	for _, x := range e.Composites {
		id, err := pid(x.Param)
		if err != nil {
			return err
		}
		parts, err := CompositeParts(x.Parts)
		if err != nil {
			return fmt.Errorf("composite %s: %w", x.Param, err)
		}
		s.start(tComposite, rid, id)
		s.str(parts)
	}
	return nil
}

// pendingSink adds the rows to a transaction's pending rows.
type pendingSink struct {
	p   *pending
	cur int
}

func (s *pendingSink) start(table int, rid, pid int64) {
	s.cur = table
	s.p.tables[table] = append(s.p.tables[table], rid, pid)
	s.p.rows[table]++
}
func (s *pendingSink) str(v string)  { s.p.tables[s.cur] = append(s.p.tables[s.cur], v) }
func (s *pendingSink) i64(v int64)   { s.p.tables[s.cur] = append(s.p.tables[s.cur], v) }
func (s *pendingSink) f64(v float64) { s.p.tables[s.cur] = append(s.p.tables[s.cur], v) }

// target leaves 0 and notes the value's place: the transaction looks the
// targets up in bulk when it inserts the rows (Tx.resolveTargets).
func (s *pendingSink) target(typ, id string) {
	s.p.tables[s.cur] = append(s.p.tables[s.cur], int64(0))
	if typ != "" && id != "" {
		s.p.targets = append(s.p.targets, targetSlot{len(s.p.tables[s.cur]) - 1, resKey{typ, id}})
	}
}

// copySink adds the rows to binary COPY data, one buffer per table
// (PostgreSQL; the column types are those of the index tables: pid is an
// integer, the others bigint, double precision or text).
type copySink struct {
	bufs *[numTables]*copyBuf
	c    *copyBuf
	// rids are the targets' rids, looked up beforehand; a target not in
	// it is written as 0.
	rids map[resKey]int64
}

func (s *copySink) start(table int, rid, pid int64) {
	s.c = s.bufs[table]
	s.c.startRow(len(indexTables[table].cols))
	s.c.int8(rid)
	s.c.int4(int32(pid))
}
func (s *copySink) str(v string)  { s.c.text(v) }
func (s *copySink) i64(v int64)   { s.c.int8(v) }
func (s *copySink) f64(v float64) { s.c.float8(v) }
func (s *copySink) target(typ, id string) {
	s.c.int8(s.rids[resKey{typ, id}])
}
