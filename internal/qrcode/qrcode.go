// Package qrcode draws a SMART Health Link as a QR code, as PNG or SVG.
//
// The SHL specification asks for error correction level M and byte mode
// (base64url has lower-case letters, which alphanumeric mode cannot carry),
// and a QR code needs a light quiet zone four modules wide to scan reliably.
// The symbol itself comes from github.com/boombuler/barcode/qr, which lets us
// force byte mode and picks the best of the eight masks by the standard
// penalty rules; this package only renders its module matrix.
package qrcode

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"strconv"

	"github.com/boombuler/barcode/qr"
)

// QuietZone is the width of the light border, in modules, that ISO/IEC
// 18004 requires around the symbol.
const QuietZone = 4

// MaxScale bounds the pixels (PNG) or user units (SVG) per module, so that a
// request cannot ask for an image of gigapixels.
const MaxScale = 64

// Code is a QR code symbol: Size×Size modules, without the quiet zone.
type Code struct {
	size int
	dark []bool // row-major
}

// Encode makes the QR code of text (the link) in byte mode at error
// correction level M, in the smallest version that holds it.
func Encode(text string) (*Code, error) {
	if text == "" {
		return nil, errors.New("qrcode: nothing to encode")
	}
	bc, err := qr.Encode(text, qr.M, qr.Unicode) // Unicode: byte mode, no ECI
	if err != nil {
		return nil, fmt.Errorf("qrcode: %d bytes at error correction level M (at most 2331 fit): %w", len(text), err)
	}
	b := bc.Bounds()
	c := &Code{size: b.Dx(), dark: make([]bool, b.Dx()*b.Dy())}
	for y := 0; y < c.size; y++ {
		for x := 0; x < c.size; x++ {
			g := color.GrayModel.Convert(bc.At(b.Min.X+x, b.Min.Y+y)).(color.Gray)
			c.dark[y*c.size+x] = g.Y < 128
		}
	}
	return c, nil
}

// Size is the number of modules on a side, without the quiet zone
// (21 for version 1, 4 more per version).
func (c *Code) Size() int { return c.size }

// Dark reports whether the module in column x, row y is dark; outside the
// symbol (the quiet zone and beyond) everything is light.
func (c *Code) Dark(x, y int) bool {
	if x < 0 || y < 0 || x >= c.size || y >= c.size {
		return false
	}
	return c.dark[y*c.size+x]
}

func checkScale(scale int) error {
	if scale < 1 || scale > MaxScale {
		return fmt.Errorf("qrcode: scale %d out of range 1..%d", scale, MaxScale)
	}
	return nil
}

// WritePNG writes a black-on-white, 1 bit per pixel PNG with scale pixels
// per module, quiet zone included.
func (c *Code) WritePNG(w io.Writer, scale int) error {
	if err := checkScale(scale); err != nil {
		return err
	}
	dim := (c.size + 2*QuietZone) * scale
	img := image.NewPaletted(image.Rect(0, 0, dim, dim), color.Palette{color.White, color.Black})
	for y := 0; y < c.size; y++ {
		for x := 0; x < c.size; x++ {
			if !c.dark[y*c.size+x] {
				continue
			}
			px, py := (x+QuietZone)*scale, (y+QuietZone)*scale
			for dy := 0; dy < scale; dy++ {
				row := img.Pix[(py+dy)*img.Stride+px:]
				for dx := 0; dx < scale; dx++ {
					row[dx] = 1
				}
			}
		}
	}
	// The default level beats BestCompression here: smaller and 3x faster
	// on these 1-bit images.
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("qrcode: write PNG: %w", err)
	}
	return nil
}

// WriteSVG writes the symbol as SVG: one path of dark runs, row by row,
// in module units (viewBox), with width and height of scale units per
// module so it also has a sensible size where no CSS sizes it. The explicit
// stroke="none" is for ImageMagick's renderer, which otherwise outlines
// every shape and fills in the light modules.
func (c *Code) WriteSVG(w io.Writer, scale int) error {
	if err := checkScale(scale); err != nil {
		return err
	}
	dim := c.size + 2*QuietZone
	px := strconv.Itoa(dim * scale)
	d := strconv.Itoa(dim)
	var b bytes.Buffer
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ` + d + " " + d +
		`" width="` + px + `" height="` + px + `" shape-rendering="crispEdges">` +
		`<rect width="` + d + `" height="` + d + `" fill="#fff" stroke="none"/><path stroke="none" d="`)
	c.appendPath(&b)
	b.WriteString(`"/></svg>`)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("qrcode: write SVG: %w", err)
	}
	return nil
}

// appendPath draws each horizontal run of dark modules as a filled
// rectangle one module high ("M4 4h7v1h-7zm8 0h2v1h-2z..."). Moves are
// relative to the previous run's start, where "z" leaves the pen, which keeps
// the numbers short. Filled rectangles rather than the shorter stroked lines
// some generators emit: ImageMagick's built-in renderer (and so zbarimg)
// draws those wrongly, and a printed or converted QR code must still scan.
func (c *Code) appendPath(b *bytes.Buffer) {
	var num [20]byte
	n := func(v int) []byte { return strconv.AppendInt(num[:0], int64(v), 10) }
	cx, cy := 0, 0
	first := true
	for y := 0; y < c.size; y++ {
		for x := 0; x < c.size; {
			if !c.dark[y*c.size+x] {
				x++
				continue
			}
			run := 1
			for x+run < c.size && c.dark[y*c.size+x+run] {
				run++
			}
			ax, ay := x+QuietZone, y+QuietZone
			if first {
				b.WriteByte('M')
				b.Write(n(ax))
				b.WriteByte(' ')
				b.Write(n(ay))
				first = false
			} else {
				b.WriteByte('m')
				b.Write(n(ax - cx))
				b.WriteByte(' ')
				b.Write(n(ay - cy))
			}
			b.WriteByte('h')
			b.Write(n(run))
			b.WriteString("v1h-")
			b.Write(n(run))
			b.WriteByte('z')
			cx, cy = ax, ay
			x += run
		}
	}
}

// PNG returns the PNG of text's QR code with scale pixels per module.
func PNG(text string, scale int) ([]byte, error) {
	c, err := Encode(text)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := c.WritePNG(&b, scale); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// SVG returns the SVG of text's QR code, scale units per module.
func SVG(text string, scale int) ([]byte, error) {
	c, err := Encode(text)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := c.WriteSVG(&b, scale); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
