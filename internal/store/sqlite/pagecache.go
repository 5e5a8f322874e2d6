package sqlite

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// With Options.BulkWrites, the page cache of every connection takes its
// pages from one buffer of fixed-size slots (SQLITE_CONFIG_PAGECACHE),
// allocated once per process before SQLite initialises.
//
// Without it each cached page is a malloc of the page plus SQLite's
// header, a little over 8 KiB, which the driver's allocator
// (modernc.org/memory) serves from its 16 KiB size class: a cached page
// cost twice its size in resident memory. A slot costs its size, so the
// writer's cache can be twice as large for the same memory. The price is
// paid up front: SQLite links the slots into its free list when it
// initialises, which makes one 4 KiB page of each slot resident (about 16
// MiB for the 4,000 slots of Options.BulkWrites, half the buffer);
// the rest of a slot becomes resident when a page first fills it. When
// the slots run out (more stores or connections than planned for, as in
// tests that open many stores), SQLite recycles cached pages rather than
// grow a cache, and mallocs the pages it must have; pages larger than 8
// KiB are always malloc'ed, and smaller ones (a database created with
// another page size) take a whole slot each.

var pageCacheOnce sync.Once

// configurePageCache gives SQLite a buffer of n slots, unless SQLite is
// initialised already (a connection opened before): then pages are
// malloc'ed, as without it. Only the first call does anything.
func configurePageCache(n int) {
	pageCacheOnce.Do(func() {
		if err := setPageCache(n); err != nil {
			slog.Warn("sqlite: page cache slots not configured; pages are allocated one by one", "err", err)
		}
	})
}

// setPageCache allocates n slots for pages of up to pageSize bytes and
// hands them to SQLite.
func setPageCache(n int) error {
	tls := libc.NewTLS()
	defer tls.Close()
	args := libc.Xmalloc(tls, 3*8)
	if args == 0 {
		return fmt.Errorf("allocate argument list: out of memory")
	}
	defer libc.Xfree(tls, args)
	// The header SQLite keeps with each cached page.
	hdr := libc.Xcalloc(tls, 1, 8)
	if hdr == 0 {
		return fmt.Errorf("allocate header size: out of memory")
	}
	defer libc.Xfree(tls, hdr)
	if rc := sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_PCACHE_HDRSZ, libc.VaList(args, hdr)); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("read page header size: sqlite3_config returned %d", rc)
	}
	sz := (pageSize + int(int32(binary.NativeEndian.Uint32(libc.GoBytes(hdr, 4)))) + 7) &^ 7
	buf := libc.Xmalloc(tls, libc.Tsize_t(sz*n))
	if buf == 0 {
		return fmt.Errorf("allocate %d page slots of %d bytes: out of memory", n, sz)
	}
	if rc := sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_PAGECACHE, libc.VaList(args, buf, int32(sz), int32(n))); rc != sqlite3.SQLITE_OK {
		libc.Xfree(tls, buf)
		return fmt.Errorf("set page cache: sqlite3_config returned %d", rc)
	}
	// buf is SQLite's until the process ends.
	return nil
}
