package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/qrcode"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/shl"
)

func init() {
	register(command{name: "share", summary: "share part of a record as a SMART Health Link (QR code)", run: runShare})
	register(command{name: "shl", summary: "open a SMART Health Link: phr shl fetch 'shlink:/...'", run: runSHL})
}

func runShare(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("share", "--label TEXT [--passcode P] [--expires 7d] [--type T1,T2] [--summary] [--file F.phr] --qr out.png [--server URL --token T | --data DIR --base-url URL]", errOut)
	var (
		cf                                        clientFlags
		label, passcode, expires, types, from, to string
		flag, patient, qr, base, upl              string
		keyFile                                   string
		summary, viewer                           bool
	)
	cf.add(f)
	f.string(&label, "label", "", "label shown to the recipient (at most 80 characters)")
	f.string(&passcode, "passcode", "", "passcode the recipient must enter (adds flag P)")
	f.string(&expires, "expires", "", "expiry: a duration (7d, 12h, 30m) or an instant; empty: never")
	f.string(&types, "type", "", "comma-separated resource types to share (default: the whole record)")
	f.string(&from, "from", "", "share only resources dated on or after this date")
	f.string(&to, "to", "", "share only resources dated on or before this date")
	f.bool(&summary, "summary", false, "share an emergency summary (IPS-style: allergies, medications, problems, immunizations)")
	f.string(&upl, "file", "", "share this file instead (.phr NDJSON, .sphr, or a FHIR JSON resource)")
	f.string(&flag, "flag", "", "extra flags: L (long-term, follows the record), U (single file by GET)")
	f.string(&patient, "patient", "", "whose record (required unless the token is a patient's)")
	f.string(&qr, "qr", "", "write the QR code to this file (.png or .svg)")
	f.bool(&viewer, "viewer", false, "print (and put in the QR code) the link behind the server's viewer page (https://.../shl/view#shlink:/...), which phone cameras open in a browser")
	f.string(&base, "base-url", "", "public URL of the server that will serve the link (with the local store)")
	f.string(&keyFile, "shl-key-file", "", "with the local store: the server's --shl-key-file, if it has one")
	if err := f.parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, f.Args())
	}
	if err := cf.check(); err != nil {
		return err
	}
	req := shl.CreateRequest{Label: label, Passcode: passcode, Expires: expires, Flag: flag, Patient: patient}
	sel := shl.Selection{Kind: shl.KindRecord, From: from, To: to}
	if types != "" {
		for _, t := range strings.Split(types, ",") {
			if t = strings.TrimSpace(t); t != "" {
				sel.Types = append(sel.Types, t)
			}
		}
	}
	switch {
	case summary && upl != "":
		return fmt.Errorf("%w: --summary and --file are alternatives", errUsage)
	case summary:
		if len(sel.Types) > 0 || from != "" || to != "" {
			return fmt.Errorf("%w: --summary has fixed sections; --type, --from and --to narrow the whole record", errUsage)
		}
		sel = shl.Selection{Kind: shl.KindSummary}
	case upl != "":
		data, err := os.ReadFile(upl)
		if err != nil {
			return fmt.Errorf("--file: %w", err)
		}
		sel = shl.Selection{Kind: shl.KindFile, Name: filepath.Base(upl), Data: data}
	}
	req.Content = []shl.Selection{sel}

	var link *shl.Link
	var err error
	if cf.remote() {
		link, err = createRemote(ctx, &cf, &req)
	} else {
		link, err = createLocal(ctx, server.Config{DataDir: cf.sf.data, DB: cf.sf.db, BaseURL: base, SHLKeyFile: keyFile}, &req, errOut)
	}
	if err != nil {
		return err
	}
	if qr != "" {
		text := link.Link
		if viewer {
			text = link.ViewerLink
		}
		if err := writeQR(qr, text); err != nil {
			return err
		}
	}
	if viewer {
		fmt.Fprintln(out, link.ViewerLink)
	} else {
		fmt.Fprintln(out, link.Link)
	}
	fmt.Fprintf(errOut, "link %s over Patient/%s (flags %q, %d files); manage it at /shl/links/%s\n", link.ID, link.Patient, link.Flag, len(link.Files), link.ID)
	return nil
}

// createRemote asks the phr server of cf (--server) to make the link.
func createRemote(ctx context.Context, cf *clientFlags, req *shl.CreateRequest) (*shl.Link, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	c, err := cf.open(ctx)
	if err != nil {
		return nil, err
	}
	defer c.close()
	rb, err := c.callRoot(ctx, http.MethodPost, "/shl", bytes.NewReader(body), "Content-Type", "application/json")
	if err != nil {
		return nil, err
	}
	var l shl.Link
	if err := json.Unmarshal(rb, &l); err != nil || l.Link == "" {
		return nil, fmt.Errorf("%s answered something that is not a created link: %.200s", c.root, rb)
	}
	return &l, nil
}

// createLocal makes the link in the local store, with the full access the
// command line has to its data directory. base must be where a server on
// this store will be reachable by recipients.
func createLocal(ctx context.Context, cfg server.Config, req *shl.CreateRequest, errOut io.Writer) (*shl.Link, error) {
	if req.Patient == "" {
		return nil, fmt.Errorf("%w: --patient is required with the local store", errUsage)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = server.BaseFromAddr("127.0.0.1:8080")
		fmt.Fprintf(errOut, "notice: the link points at %s; set --base-url to the address recipients will use\n", cfg.BaseURL)
	}
	app, err := server.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer app.Close()
	return app.SHL.Create(access.With(ctx, access.System{Name: "cli"}), req)
}

// writeQR writes the link's QR code as PNG or SVG (by file extension).
func writeQR(path, link string) error {
	var b []byte
	var err error
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		b, err = qrcode.SVG(link, 8)
	case ".png":
		b, err = qrcode.PNG(link, 8)
	default:
		return fmt.Errorf("%w: --qr %s: name a .png or .svg file", errUsage, path)
	}
	if err != nil {
		return fmt.Errorf("QR code: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("--qr: %w", err)
	}
	return nil
}

func runSHL(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "list", "revoke", "log":
			return runSHLManage(ctx, args[0], args[1:], out, errOut)
		}
	}
	if len(args) == 0 || args[0] != "fetch" {
		return fmt.Errorf("%w: phr shl fetch 'shlink:/...' [--passcode P] [--out DIR] | phr shl list|revoke ID|log ID [--server URL --token T | --data DIR]", errUsage)
	}
	f := newFlags("shl fetch", "'shlink:/...' [--passcode P] [--recipient NAME] [--out DIR]", errOut)
	var passcode, recipient, outDir string
	f.string(&passcode, "passcode", "", "passcode of a P link")
	f.string(&recipient, "recipient", "phr", "who is asking (recorded in the sharer's access log)")
	f.string(&outDir, "out", "", "write each decrypted file into this directory (default: print them)")
	// The link may come before or after the flags.
	var link string
	rest := args[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		link, rest = rest[0], rest[1:]
	}
	if err := f.parse(rest); err != nil {
		return err
	}
	if link == "" && f.NArg() > 0 {
		link = f.Arg(0)
	}
	if link == "" || f.NArg() > 1 || (f.NArg() == 1 && f.Arg(0) != link) {
		return fmt.Errorf("%w: give exactly one link", errUsage)
	}
	p, files, err := shl.Fetch(ctx, link, shl.FetchOptions{Passcode: passcode, Recipient: recipient})
	if err != nil {
		return err
	}
	if outDir != "" {
		if err := os.MkdirAll(outDir, 0o700); err != nil {
			return err
		}
	}
	for i, file := range files {
		if outDir == "" {
			out.Write(file.Data)
			if len(file.Data) > 0 && file.Data[len(file.Data)-1] != '\n' {
				fmt.Fprintln(out)
			}
			continue
		}
		name := filepath.Join(outDir, fmt.Sprintf("file-%d%s", i+1, extension(file.ContentType)))
		if err := os.WriteFile(name, file.Data, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\t%s\t%d bytes\n", name, file.ContentType, len(file.Data))
	}
	fmt.Fprintf(errOut, "%q: %d files decrypted\n", p.Label, len(files))
	return nil
}

func extension(contentType string) string {
	switch {
	case strings.HasPrefix(contentType, "application/fhir+json"), contentType == "application/smart-api-access":
		return ".json"
	case contentType == "application/smart-health-card":
		return ".smart-health-card"
	case contentType == "application/zip":
		return ".zip"
	}
	return ".bin"
}

// runSHLManage lists links, revokes one or prints its access log, on a
// server (--server, --token) or the local store (--data, --db).
func runSHLManage(ctx context.Context, verb string, args []string, out, errOut io.Writer) error {
	synopsis := "[--patient ID] [--server URL --token T | --data DIR]"
	if verb != "list" {
		synopsis = "ID [--server URL --token T | --data DIR]"
	}
	f := newFlags("shl "+verb, synopsis, errOut)
	var cf clientFlags
	var patient string
	cf.add(f)
	if verb == "list" {
		f.string(&patient, "patient", "", "only the links over this patient's record")
	}
	var id string
	if verb != "list" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := f.parse(args); err != nil {
		return err
	}
	if verb != "list" && id == "" {
		if f.NArg() != 1 {
			return fmt.Errorf("%w: give the link's id (from phr shl list)", errUsage)
		}
		id = f.Arg(0)
	} else if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, f.Args())
	}

	if err := cf.check(); err != nil {
		return err
	}
	// call runs the request on the server, or the service on the store.
	var call func(method, path string, local func(context.Context, *shl.Service) (any, error)) ([]byte, error)
	if cf.remote() {
		c, err := cf.open(ctx)
		if err != nil {
			return err
		}
		defer c.close()
		call = func(method, path string, _ func(context.Context, *shl.Service) (any, error)) ([]byte, error) {
			return c.callRoot(ctx, method, path, nil)
		}
	} else {
		app, err := server.Open(ctx, server.Config{DataDir: cf.sf.data, DB: cf.sf.db})
		if err != nil {
			return err
		}
		defer app.Close()
		sys := access.With(ctx, access.System{Name: "cli"})
		call = func(_, _ string, local func(context.Context, *shl.Service) (any, error)) ([]byte, error) {
			v, err := local(sys, app.SHL)
			if err != nil {
				return nil, err
			}
			return json.Marshal(v)
		}
	}
	switch verb {
	case "list":
		path := "/shl"
		if patient != "" {
			path += "?patient=" + url.QueryEscape(patient)
		}
		b, err := call(http.MethodGet, path, func(ctx context.Context, s *shl.Service) (any, error) {
			links, err := s.List(ctx, patient)
			return map[string]any{"links": links}, err
		})
		if err != nil {
			return err
		}
		var res struct{ Links []shl.Link }
		if err := json.Unmarshal(b, &res); err != nil {
			return fmt.Errorf("the answer is not a list of links: %w", err)
		}
		for _, l := range res.Links {
			exp := l.Expires
			if exp == "" {
				exp = "never"
			}
			fmt.Fprintf(out, "%s\t%s\tPatient/%s\tflag=%s\texpires=%s\tfiles=%d\t%s\n", l.ID, l.Status, l.Patient, l.Flag, exp, len(l.Files), l.Label)
		}
	case "revoke":
		_, err := call(http.MethodDelete, "/shl/links/"+url.PathEscape(id), func(ctx context.Context, s *shl.Service) (any, error) {
			return nil, s.Revoke(ctx, id)
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(errOut, "link %s revoked\n", id)
	case "log":
		b, err := call(http.MethodGet, "/shl/links/"+url.PathEscape(id)+"/log", func(ctx context.Context, s *shl.Service) (any, error) {
			log, err := s.AccessLog(ctx, id)
			return map[string]any{"access": log}, err
		})
		if err != nil {
			return err
		}
		var res struct{ Access []shl.Access }
		if err := json.Unmarshal(b, &res); err != nil {
			return fmt.Errorf("the answer is not an access log: %w", err)
		}
		for _, a := range res.Access {
			fmt.Fprintf(out, "%s\t%s\t%d\t%q\t%s\n", a.At, a.Action, a.Status, a.Recipient, a.Detail)
		}
	}
	return nil
}
