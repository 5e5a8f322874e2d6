package sqlite

import (
	"encoding/binary"
	"time"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// Pragmas of each pool, for the tests.
var (
	WriterPragmas = writerPragmas
	ReaderPragmas = readerPragmas
)

// PageCacheStatus returns the number of page cache slots in use and the
// bytes of page cache allocations that found no free slot (since the
// process started).
func PageCacheStatus() (used, overflow int64) {
	tls := libc.NewTLS()
	defer tls.Close()
	p := libc.Xcalloc(tls, 2, 8)
	defer libc.Xfree(tls, p)
	read := func(op int32) int64 {
		sqlite3.Xsqlite3_status64(tls, op, p, p+8, 0)
		return int64(binary.NativeEndian.Uint64(libc.GoBytes(p, 8)))
	}
	return read(sqlite3.SQLITE_STATUS_PAGECACHE_USED), read(sqlite3.SQLITE_STATUS_PAGECACHE_OVERFLOW)
}

// SetCheckpointSizes changes the background checkpoints' thresholds for
// stores opened afterwards; the returned function restores them.
func SetCheckpointSizes(pass, maxWAL int, idle time.Duration) (restore func()) {
	p, m, i := passBytes, maxWALBytes, idleAfter
	passBytes, maxWALBytes, idleAfter = pass, maxWAL, idle
	return func() { passBytes, maxWALBytes, idleAfter = p, m, i }
}
