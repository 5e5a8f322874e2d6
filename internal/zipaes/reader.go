package zipaes

import (
	"archive/zip"
	"bufio"
	"compress/flate"
	"crypto/hmac"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"
)

// Reader lists and opens the entries of a ZIP archive, plain or WinZip AES encrypted,
// or a mix of both. It reads through an io.ReaderAt, so only the central directory
// is held in memory.
type Reader struct {
	// File lists the entries in central directory order.
	File []*File
}

// File is one entry of an archive.
type File struct {
	// Name is the entry's path as stored in the archive. It is not checked: a
	// caller that writes entries to disk must reject absolute paths and ".."
	// elements itself (io/fs.ValidPath does).
	Name string
	// Modified is the modification time recorded for the entry.
	Modified time.Time
	// Size is the uncompressed size the archive declares; Open fails if the data
	// is longer or shorter.
	Size uint64
	// Encrypted reports whether the entry needs a passphrase.
	Encrypted bool

	zf      *zip.File
	pass    string
	aes     aesInfo
	openErr error // why the entry cannot be opened, found while listing
}

// NewReader reads the central directory of the size-byte archive in r. The
// passphrase opens the encrypted entries; it may be empty when the archive has none,
// and opening an encrypted entry then fails with ErrPassphraseRequired.
func NewReader(r io.ReaderAt, size int64, passphrase string) (*Reader, error) {
	zr, err := zip.NewReader(r, size)
	if errors.Is(err, zip.ErrInsecurePath) && zr != nil {
		// Only with GODEBUG=zipinsecurepath=0; names are the caller's to check
		// (see File.Name), so the listing is still good.
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("zipaes: not a readable zip archive: %w", err)
	}
	out := &Reader{File: make([]*File, 0, len(zr.File))}
	for _, zf := range zr.File {
		f := &File{
			Name:      zf.Name,
			Modified:  zf.Modified,
			Size:      zf.UncompressedSize64,
			Encrypted: zf.Flags&flagEncrypted != 0,
			zf:        zf,
			pass:      passphrase,
		}
		switch {
		case !f.Encrypted:
		case zf.Flags&flagStrong != 0:
			f.openErr = fmt.Errorf("%w: PKWARE strong encryption", ErrUnsupported)
		case zf.Method != methodAES:
			f.openErr = fmt.Errorf("%w: traditional ZipCrypto encryption, which is weak; re-create the archive with AES-256 (7-Zip: -mem=AES256)", ErrUnsupported)
		default:
			f.aes, f.openErr = parseAESExtra(zf.Extra)
			if f.openErr == nil && f.aes.method != Deflate && f.aes.method != Store {
				f.openErr = fmt.Errorf("%w: compression method %d inside AES (only Deflate and Store are read)", ErrUnsupported, f.aes.method)
			}
		}
		out.File = append(out.File, f)
	}
	return out, nil
}

// Open opens the first entry named name; see File.Open.
func (r *Reader) Open(name string) (io.ReadCloser, error) {
	for _, f := range r.File {
		if f.Name == name {
			return f.Open()
		}
	}
	return nil, fmt.Errorf("zipaes: the archive has no entry %q", name)
}

// Open returns the entry's contents as a stream: decrypted, inflated and checked.
//
// An encrypted entry is authenticated by an HMAC over all of its data, which can
// only be checked at the end. Read therefore returns io.EOF only after the HMAC, the
// declared size and (for AE-1) the CRC matched; a tampered entry ends with an error
// wrapping ErrAuthentication instead. Bytes read before the end are not yet
// authenticated: a caller that must not act on forged data reads to io.EOF before
// committing anything. A wrong passphrase is reported here, by ErrWrongPassphrase,
// before any data is read.
func (f *File) Open() (io.ReadCloser, error) {
	if f.openErr != nil {
		return nil, fmt.Errorf("zipaes: entry %q: %w", f.Name, f.openErr)
	}
	if !f.Encrypted {
		rc, err := f.zf.Open()
		if err != nil {
			return nil, fmt.Errorf("zipaes: entry %q: %w", f.Name, err)
		}
		return &plainReader{rc: rc, name: f.Name}, nil
	}
	if f.pass == "" {
		return nil, fmt.Errorf("zipaes: entry %q: %w", f.Name, ErrPassphraseRequired)
	}
	return f.openAES()
}

func (f *File) openAES() (io.ReadCloser, error) {
	saltLen := f.aes.saltLen()
	overhead := uint64(saltLen + verifierLen + macLen)
	if f.zf.CompressedSize64 < overhead {
		return nil, fmt.Errorf("zipaes: entry %q: its data is %d bytes, too short for the %d bytes of salt, verifier and authentication code",
			f.Name, f.zf.CompressedSize64, overhead)
	}
	raw, err := f.zf.OpenRaw()
	if err != nil {
		return nil, fmt.Errorf("zipaes: entry %q: %w", f.Name, err)
	}
	src := bufio.NewReaderSize(raw, 64<<10)
	head := make([]byte, saltLen+verifierLen)
	if _, err := io.ReadFull(src, head); err != nil {
		return nil, fmt.Errorf("zipaes: entry %q: read salt: %w", f.Name, err)
	}
	k, err := deriveKeys(f.pass, head[:saltLen], f.aes.keyLen())
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(k.verifier[:], head[saltLen:]) != 1 {
		return nil, fmt.Errorf("zipaes: entry %q: %w", f.Name, ErrWrongPassphrase)
	}
	c, err := newCTR(k.enc)
	if err != nil {
		return nil, err
	}
	dec := &decReader{
		src: io.LimitReader(src, int64(f.zf.CompressedSize64-overhead)),
		ctr: c,
		mac: newMAC(k.mac),
	}
	r := &aesReader{f: f, src: src, dec: dec, body: dec}
	if f.aes.vendor == vendorAE1 {
		r.crc = crc32.NewIEEE()
	}
	if f.aes.method == Deflate {
		r.inflate = flate.NewReader(dec)
		r.body = r.inflate
	}
	return r, nil
}

// decReader authenticates and decrypts the ciphertext as it is read. It has no
// ReadByte on purpose: flate then reads it through a buffer, in blocks, instead of
// running the HMAC and the cipher a byte at a time.
type decReader struct {
	src io.Reader
	ctr *ctr
	mac hash.Hash
}

func (d *decReader) Read(p []byte) (int, error) {
	n, err := d.src.Read(p)
	d.mac.Write(p[:n])
	d.ctr.xor(p[:n], p[:n])
	return n, err
}

// aesReader is the stream File.Open returns for an encrypted entry.
type aesReader struct {
	f       *File
	src     *bufio.Reader // raw entry data; the authentication code follows the ciphertext
	dec     *decReader
	inflate io.ReadCloser // nil for Store
	body    io.Reader     // inflate or dec
	crc     hash.Hash32   // AE-1 only
	n       uint64
	err     error // sticky result, io.EOF once verified
}

func (r *aesReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.body.Read(p)
	r.n += uint64(n)
	if r.crc != nil {
		r.crc.Write(p[:n])
	}
	if r.n > r.f.Size {
		r.err = fmt.Errorf("zipaes: entry %q: data continues past the %d bytes its header declares", r.f.Name, r.f.Size)
		return n, r.err
	}
	switch {
	case err == io.EOF:
		r.err = r.verify(nil)
	case err != nil:
		r.err = r.verify(err)
	}
	return n, r.err
}

// verify runs at the end of the data, or after a read error: it feeds any ciphertext
// the decompressor left unread through the HMAC, then compares the authentication
// code, the size and the CRC. A failed HMAC outranks the read error, since tampering
// is what usually makes inflation fail. It returns io.EOF when everything matched.
func (r *aesReader) verify(readErr error) error {
	name := r.f.Name
	if _, err := io.Copy(io.Discard, r.dec); err != nil {
		return fmt.Errorf("zipaes: entry %q: read encrypted data: %w", name, err)
	}
	var code [macLen]byte
	if _, err := io.ReadFull(r.src, code[:]); err != nil {
		return fmt.Errorf("zipaes: entry %q: read authentication code: %w", name, err)
	}
	if !hmac.Equal(r.dec.mac.Sum(nil)[:macLen], code[:]) {
		return fmt.Errorf("zipaes: entry %q: %w", name, ErrAuthentication)
	}
	if readErr != nil {
		return fmt.Errorf("zipaes: entry %q: %w", name, readErr)
	}
	if r.n != r.f.Size {
		return fmt.Errorf("zipaes: entry %q: %d bytes of data, but the header declares %d", name, r.n, r.f.Size)
	}
	if r.crc != nil && r.crc.Sum32() != r.f.zf.CRC32 {
		return fmt.Errorf("zipaes: entry %q: CRC-32 %08x, header says %08x: %w", name, r.crc.Sum32(), r.f.zf.CRC32, zip.ErrChecksum)
	}
	return io.EOF
}

// Close releases the decompressor. It does not verify: read to io.EOF for that.
func (r *aesReader) Close() error {
	if r.err == nil {
		r.err = errors.New("zipaes: read after Close")
	}
	if r.inflate != nil {
		return r.inflate.Close()
	}
	return nil
}

// plainReader names the entry in archive/zip's errors (checksum, format).
type plainReader struct {
	rc   io.ReadCloser
	name string
}

func (p *plainReader) Read(b []byte) (int, error) {
	n, err := p.rc.Read(b)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("zipaes: entry %q: %w", p.name, err)
	}
	return n, err
}

func (p *plainReader) Close() error { return p.rc.Close() }
