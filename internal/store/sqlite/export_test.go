package sqlite

// Pragmas of each pool, for the tests.
var (
	WriterPragmas = writerPragmas
	ReaderPragmas = readerPragmas
)
