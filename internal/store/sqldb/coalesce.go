package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/phr-project/phr/internal/store"
)

// Coalesced reads (PostgreSQL).
//
// A GET of one resource is one indexed lookup, cheap for the database
// itself; what it costs is the round trip around it: a network write and
// read on each side, and the wake-up of a server process. Under load, the
// reads that arrive while the connections are busy are therefore answered
// together: a few reader goroutines (Options.Readers, fewer than the read
// connections: the fewer they are, the larger the groups under load), each
// take the next waiting read plus every other read waiting at that moment,
// and look them all up in one statement (unnest of the requested type/id
// pairs). At low load a read finds an idle reader and goes alone; a read
// never waits for a batch to fill, and never joins a query that started
// before it arrived, so it sees every write committed before it was made.

// maxReadBatch bounds the reads one statement answers.
const maxReadBatch = 64

// readTimeout bounds one batch statement; the batch does not run under any
// one request's context, since the others would fail with it.
const readTimeout = 30 * time.Second

var errClosed = errors.New("the store is closed")

type readReq struct {
	typ, id string
	// out receives the result (buffered: a reader never blocks on a
	// request whose caller gave up).
	out chan readResult
}

type readResult struct {
	res *store.Resource
	err error
}

// startReaders starts n reader goroutines.
func (db *DB) startReaders(n int) {
	db.readReqs = make(chan *readReq)
	db.quit = make(chan struct{})
	for range n {
		db.readers.Add(1)
		go db.reader()
	}
}

// stopReaders stops the readers (reads made afterwards fail).
func (db *DB) stopReaders() {
	if db.readReqs == nil {
		return
	}
	db.closeOnce.Do(func() { close(db.quit) })
	db.readers.Wait()
}

// readCoalesced is Read through the readers.
func (db *DB) readCoalesced(ctx context.Context, typ, id string) (*store.Resource, error) {
	req := &readReq{typ: typ, id: id, out: make(chan readResult, 1)}
	select {
	case db.readReqs <- req:
	case <-db.quit:
		return nil, errClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-req.out:
		return r.res, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (db *DB) reader() {
	defer db.readers.Done()
	batch := make([]*readReq, 0, maxReadBatch)
	for {
		select {
		case r := <-db.readReqs:
			batch = append(batch[:0], r)
		case <-db.quit:
			return
		}
	more:
		for len(batch) < maxReadBatch {
			select {
			case r := <-db.readReqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		db.readBatch(batch)
		clear(batch)
	}
}

// readBatch answers a batch of reads with one statement.
func (db *DB) readBatch(batch []*readReq) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if len(batch) == 1 {
		r := batch[0]
		res, err := db.readOne(ctx, r.typ, r.id)
		r.out <- readResult{res, err}
		return
	}
	types := make([]string, len(batch))
	ids := make([]string, len(batch))
	for i, r := range batch {
		types[i], ids[i] = r.typ, r.id
	}
	found := make([]*store.Resource, len(batch))
	err := func() error {
		rows, err := db.Query(ctx, `SELECT q.n, `+versionCols+` FROM unnest(?::text[], ?::text[]) WITH ORDINALITY AS q(type, id, n)
			JOIN resource r ON r.type = q.type AND r.id = q.id JOIN resource_version v ON v.seq = r.seq`, types, ids)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				res  store.Resource
				n    int64
				lu   int64
				blob sql.NullString
			)
			if err := rows.Scan(&n, &res.Seq, &res.Type, &res.ID, &res.Version, &lu, &res.Deleted, &res.Method, &res.JSON, &blob); err != nil {
				return err
			}
			if n < 1 || n > int64(len(batch)) {
				return fmt.Errorf("row for request %d of %d", n, len(batch))
			}
			res.LastUpdated = FromMicros(lu)
			res.Blob = blob.String
			found[n-1] = &res
		}
		return rows.Err()
	}()
	for i, r := range batch {
		switch {
		case err != nil:
			r.out <- readResult{err: fmt.Errorf("read %s/%s: %w", r.typ, r.id, err)}
		case found[i] == nil:
			r.out <- readResult{err: store.ErrNotFound}
		default:
			r.out <- readResult{res: found[i]}
		}
	}
}
