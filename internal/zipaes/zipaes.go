// Package zipaes reads and writes ZIP archives whose entries are encrypted with WinZip
// AES (AE-1 and AE-2), the password-based encryption that 7-Zip, WinZip, pyzipper and
// most current unzip tools understand. It exists because the .sphr export format is
// "a password encrypted zip" and no maintained Go library writes that format; the
// rest of the ZIP container (headers, central directory, ZIP64) is left to
// archive/zip.
//
// The format, as WinZip documents it (https://www.winzip.com/en/support/aes-encryption/):
// an encrypted entry has compression method 99 and an extra field 0x9901 that names
// the vendor version (AE-1 or AE-2), the key strength and the real compression
// method. Its data is salt, a 2-byte password verifier, the compressed data encrypted
// with AES in CTR mode (a little-endian counter that starts at 1), and the first 10
// bytes of an HMAC-SHA1 over the encrypted data. The AES key, the HMAC key and the
// verifier come from PBKDF2-HMAC-SHA1 with 1000 iterations over the passphrase and
// the salt. AE-2, which this package writes, stores a CRC of 0 because the HMAC
// already authenticates the data and a plaintext CRC would leak information about it.
//
// Each entry has its own random salt and so its own keys; deriving them costs about
// a millisecond per entry, which is the format's price for per-entry keys.
package zipaes

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Errors a caller can tell apart with errors.Is. They come wrapped with the entry name.
var (
	// ErrPassphraseRequired means an entry is encrypted and the reader was opened
	// without a passphrase, so the caller should ask the user for one.
	ErrPassphraseRequired = errors.New("zipaes: the entry is encrypted and no passphrase was given")
	// ErrWrongPassphrase means the password verifier stored with the entry does not
	// match the passphrase. (One wrong passphrase in 65,536 passes the 2-byte
	// verifier; it then fails with ErrAuthentication instead.)
	ErrWrongPassphrase = errors.New("zipaes: wrong passphrase")
	// ErrAuthentication means the entry's HMAC does not match its data: the archive
	// was modified or damaged after it was written.
	ErrAuthentication = errors.New("zipaes: authentication code mismatch: the entry was modified or damaged")
	// ErrUnsupported means the entry uses a feature this package does not read, such
	// as the weak traditional ZipCrypto encryption or an unknown compression method.
	ErrUnsupported = errors.New("zipaes: unsupported")
)

const (
	methodAES     = 99     // compression method of a WinZip AES entry
	aesExtraID    = 0x9901 // extra field that describes the encryption
	extTimeID     = 0x5455 // Info-ZIP extended timestamp extra field
	vendorAE1     = 1      // AE-1: the CRC is stored
	vendorAE2     = 2      // AE-2: the CRC is 0
	strength256   = 3      // key strength code for AES-256
	iterations    = 1000   // PBKDF2 iteration count fixed by the format
	verifierLen   = 2      // password verifier length
	macLen        = 10     // stored length of the truncated HMAC-SHA1
	readerVersion = 51     // "version needed to extract" for AES (5.1)
	flagEncrypted = 0x1    // general purpose bit 0: the entry is encrypted
	flagStrong    = 0x40   // general purpose bit 6: PKWARE strong encryption
	flagDataDesc  = 0x8    // general purpose bit 3: sizes follow in a data descriptor
	flagUTF8      = 0x800  // general purpose bit 11: the name is UTF-8
)

// aesInfo is the decoded 0x9901 extra field.
type aesInfo struct {
	vendor   uint16 // vendorAE1 or vendorAE2
	strength byte   // 1, 2, 3 for AES-128, -192, -256
	method   uint16 // the real compression method (0 store, 8 deflate)
}

// keyLen is the AES key length of the strength; the salt is half of it.
func (a aesInfo) keyLen() int { return 8 + 8*int(a.strength) }

func (a aesInfo) saltLen() int { return a.keyLen() / 2 }

// appendAESExtra appends the 0x9901 extra field for AE-2, AES-256 and method.
func appendAESExtra(b []byte, method uint16) []byte {
	b = binary.LittleEndian.AppendUint16(b, aesExtraID)
	b = binary.LittleEndian.AppendUint16(b, 7)
	b = binary.LittleEndian.AppendUint16(b, vendorAE2)
	b = append(b, 'A', 'E', strength256)
	return binary.LittleEndian.AppendUint16(b, method)
}

// parseAESExtra finds and checks the 0x9901 field in a header's extra data.
func parseAESExtra(extra []byte) (aesInfo, error) {
	for len(extra) >= 4 {
		id := binary.LittleEndian.Uint16(extra)
		size := int(binary.LittleEndian.Uint16(extra[2:]))
		extra = extra[4:]
		if size > len(extra) {
			return aesInfo{}, fmt.Errorf("extra field 0x%04x claims %d bytes but only %d remain", id, size, len(extra))
		}
		body := extra[:size]
		extra = extra[size:]
		if id != aesExtraID {
			continue
		}
		if size < 7 {
			return aesInfo{}, fmt.Errorf("AES extra field is %d bytes, want 7", size)
		}
		info := aesInfo{
			vendor:   binary.LittleEndian.Uint16(body),
			strength: body[4],
			method:   binary.LittleEndian.Uint16(body[5:]),
		}
		if body[2] != 'A' || body[3] != 'E' {
			return aesInfo{}, fmt.Errorf("%w: AES extra field vendor id %q, want \"AE\"", ErrUnsupported, body[2:4])
		}
		if info.vendor != vendorAE1 && info.vendor != vendorAE2 {
			return aesInfo{}, fmt.Errorf("%w: AES vendor version %d (only AE-1 and AE-2 exist)", ErrUnsupported, info.vendor)
		}
		if info.strength < 1 || info.strength > 3 {
			return aesInfo{}, fmt.Errorf("%w: AES strength code %d (want 1, 2 or 3)", ErrUnsupported, info.strength)
		}
		return info, nil
	}
	return aesInfo{}, errors.New("compression method 99 (WinZip AES) without the 0x9901 extra field")
}

// keys are what PBKDF2 derives from the passphrase and one entry's salt.
type keys struct {
	enc, mac []byte
	verifier [verifierLen]byte
}

// deriveKeys runs PBKDF2-HMAC-SHA1 as WinZip AES defines it: the output is the AES
// key, then the HMAC key of the same length, then the 2-byte verifier.
func deriveKeys(passphrase string, salt []byte, keyLen int) (keys, error) {
	dk, err := pbkdf2.Key(sha1.New, passphrase, salt, iterations, 2*keyLen+verifierLen)
	if err != nil {
		return keys{}, fmt.Errorf("zipaes: derive keys: %w", err)
	}
	k := keys{enc: dk[:keyLen], mac: dk[keyLen : 2*keyLen]}
	copy(k.verifier[:], dk[2*keyLen:])
	return k, nil
}

// ctr is AES in counter mode with WinZip's counter: a 16-byte block whose first 8
// bytes are a little-endian count starting at 1 (the rest zero). crypto/cipher's CTR
// counts big-endian, so it cannot be used. Keystream is made 32 blocks at a time.
type ctr struct {
	block   cipher.Block
	counter uint64
	ks      [32 * aes.BlockSize]byte
	used    int
}

func newCTR(key []byte) (*ctr, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("zipaes: AES key: %w", err)
	}
	c := &ctr{block: b}
	c.used = len(c.ks)
	return c, nil
}

// xor sets dst to src XOR the next len(src) keystream bytes; dst and src may be the
// same slice.
func (c *ctr) xor(dst, src []byte) {
	for len(src) > 0 {
		if c.used == len(c.ks) {
			c.refill()
		}
		n := subtle.XORBytes(dst, src, c.ks[c.used:])
		c.used += n
		dst, src = dst[n:], src[n:]
	}
}

func (c *ctr) refill() {
	for i := 0; i < len(c.ks); i += aes.BlockSize {
		c.counter++
		blk := c.ks[i : i+aes.BlockSize]
		binary.LittleEndian.PutUint64(blk, c.counter)
		clear(blk[8:])
		c.block.Encrypt(blk, blk)
	}
	c.used = 0
}

// newMAC returns the HMAC-SHA1 that authenticates the encrypted data.
func newMAC(key []byte) hash.Hash { return hmac.New(sha1.New, key) }
