package bulk

import (
	"compress/flate"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// deflaters are the compressors shared by every file being written. A
// compressor holds about 1 MiB of state, and a system export keeps a file
// open per resource type (two dozen for Synthea): one compressor per open
// file made a third of the server's live heap during an export.
var deflaters = sync.Pool{New: func() any {
	w, err := flate.NewWriter(nil, flate.BestSpeed)
	if err != nil {
		panic(err) // BestSpeed is a valid level
	}
	return w
}}

// chunkedGzip writes one gzip member whose DEFLATE data is a sequence of
// independently compressed chunks, the way parallel gzip tools do: each
// chunk is compressed by a compressor from deflaters, reset before it and
// ended with a sync flush (byte-aligned, not final), so that no
// compressor state stays with the file between chunks. Any gzip reader
// decodes the result as one stream; it compresses a little less than one
// continuous stream because a chunk cannot refer back to the one before.
type chunkedGzip struct {
	w       io.Writer
	crc     uint32
	size    uint32
	started bool
}

// gzipHeader is a gzip member header: DEFLATE, no flags or file name,
// no modification time, compressed for speed (XFL 4), OS unknown.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255}

func (g *chunkedGzip) start() error {
	if g.started {
		return nil
	}
	g.started = true
	if _, err := g.w.Write(gzipHeader); err != nil {
		return fmt.Errorf("write gzip header: %w", err)
	}
	return nil
}

// writeChunk compresses p as one chunk.
func (g *chunkedGzip) writeChunk(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if err := g.start(); err != nil {
		return err
	}
	fw := deflaters.Get().(*flate.Writer)
	defer deflaters.Put(fw)
	fw.Reset(g.w)
	if _, err := fw.Write(p); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if err := fw.Flush(); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	g.crc = crc32.Update(g.crc, crc32.IEEETable, p)
	g.size += uint32(len(p)) // ISIZE is the length modulo 2^32
	return nil
}

// close ends the DEFLATE data with a final empty block and writes the
// trailer (CRC-32 and length of the uncompressed data).
func (g *chunkedGzip) close() error {
	if err := g.start(); err != nil {
		return err
	}
	fw := deflaters.Get().(*flate.Writer)
	defer deflaters.Put(fw)
	fw.Reset(g.w)
	if err := fw.Close(); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], g.crc)
	binary.LittleEndian.PutUint32(trailer[4:], g.size)
	if _, err := g.w.Write(trailer[:]); err != nil {
		return fmt.Errorf("write gzip trailer: %w", err)
	}
	return nil
}
