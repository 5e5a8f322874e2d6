package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/importer"
)

// paramList is a decoded Parameters resource.
type paramList struct {
	Parameter []paramEntry `json:"parameter"`
}

type paramEntry struct {
	Name     string          `json:"name"`
	Part     []paramEntry    `json:"part"`
	Resource json.RawMessage `json:"resource"`
	Values   map[string]any  `json:"-"`
}

func (p *paramEntry) UnmarshalJSON(b []byte) error {
	type plain paramEntry
	if err := json.Unmarshal(b, (*plain)(p)); err != nil {
		return err
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	p.Values = map[string]any{}
	for k, v := range m {
		if strings.HasPrefix(k, "value") {
			p.Values[p.Name] = v
		}
	}
	return nil
}

// value returns the value of the named part as text.
func (p paramEntry) value(name string) string {
	for _, x := range p.Part {
		if x.Name == name {
			if v, ok := x.Values[name]; ok {
				if f, ok := v.(float64); ok {
					return strconv.FormatFloat(f, 'f', -1, 64)
				}
				return fmt.Sprint(v)
			}
		}
	}
	return ""
}

func runLog(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("log", "[--batch N] [--server URL --token T | --data DIR]", errOut)
	var cf clientFlags
	var batch string
	cf.add(f)
	f.string(&batch, "batch", "", "show one batch and the versions it wrote")
	if err := f.parse(args); err != nil {
		return err
	}
	c, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	path := "$import-batches"
	if batch != "" {
		path += "?batch=" + url.QueryEscape(batch)
	}
	b, err := c.call(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	var pl paramList
	if err := json.Unmarshal(b, &pl); err != nil {
		return fmt.Errorf("unexpected answer: %w", err)
	}
	for _, p := range pl.Parameter {
		switch p.Name {
		case "batch":
			// An interrupted batch says when its process was last seen.
			status := p.value("status")
			if fin := p.value("finished"); fin != "" && status != "done" {
				status += " at " + fin
			}
			fmt.Fprintf(out, "batch %s  %s  %s  source %s  file %s  by %s\n    created %s, updated %s, unchanged %s, conflicts %s, rejected %s, deleted %s\n",
				p.value("id"), p.value("started"), status, p.value("source"), p.value("filename"), p.value("by"),
				p.value("created"), p.value("updated"), p.value("unchanged"), p.value("conflicts"), p.value("rejected"), p.value("deleted"))
		case "wrote", "deleted":
			fmt.Fprintf(out, "    %-7s %v\n", p.Name, p.Values[p.Name])
		}
	}
	return nil
}

// splitRef parses Type/id.
func splitRef(s string) (string, string, error) {
	t, id, ok := strings.Cut(s, "/")
	if !ok || t == "" || id == "" || strings.Contains(id, "/") {
		return "", "", fmt.Errorf("%w: %q is not Type/id", errUsage, s)
	}
	return t, id, nil
}

func runDiff(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("diff", "T/id [v1 v2] [--server URL --token T | --data DIR]", errOut)
	var cf clientFlags
	cf.add(f)
	if err := f.parse(reorder(args)); err != nil {
		return err
	}
	if f.NArg() != 1 && f.NArg() != 3 {
		return fmt.Errorf("%w: give T/id, optionally with two version numbers", errUsage)
	}
	typ, id, err := splitRef(f.Arg(0))
	if err != nil {
		return err
	}
	q := url.Values{}
	if f.NArg() == 3 {
		q.Set("from", f.Arg(1))
		q.Set("to", f.Arg(2))
	}
	c, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	b, err := c.call(ctx, "GET", typ+"/"+id+"/$diff?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	var pl paramList
	if err := json.Unmarshal(b, &pl); err != nil {
		return fmt.Errorf("unexpected answer: %w", err)
	}
	for _, p := range pl.Parameter {
		switch p.Name {
		case "from", "to":
			fmt.Fprintf(out, "%s version %v\n", p.Name, p.Values[p.Name])
		case "operation":
			fmt.Fprintln(out, changeLine(p.value("type"), p.value("path"), p.value("previousValue"), p.value("value")))
		}
	}
	return nil
}

// changeLine renders one difference between two versions, as phr diff
// prints it.
func changeLine(op, path, old, new string) string {
	switch op {
	case "add":
		return fmt.Sprintf("+ %s: %s", path, new)
	case "delete":
		return fmt.Sprintf("- %s: %s", path, old)
	}
	return fmt.Sprintf("~ %s: %s -> %s", path, old, new)
}

// reorder moves flags before positional arguments so that
// "phr diff T/id 1 2 --data d" parses like "phr diff --data d T/id 1 2".
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && !isBoolFlag(a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func isBoolFlag(a string) bool {
	a = strings.TrimLeft(a, "-")
	return a == "validate" || a == "quiet" || a == "patient" || a == "h" || a == "help"
}

func runRevert(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("revert", "T/id --to N [--reason TEXT] [--server URL --token T | --data DIR]", errOut)
	var cf clientFlags
	var to, reason string
	cf.add(f)
	f.string(&to, "to", "", "the version to write back")
	f.string(&reason, "reason", "", "why (recorded in the Provenance)")
	if err := f.parse(reorder(args)); err != nil {
		return err
	}
	if f.NArg() != 1 || to == "" {
		return fmt.Errorf("%w: give T/id and --to N", errUsage)
	}
	typ, id, err := splitRef(f.Arg(0))
	if err != nil {
		return err
	}
	c, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	q := url.Values{"to": {to}}
	if reason != "" {
		q.Set("reason", reason)
	}
	b, err := c.call(ctx, "POST", typ+"/"+id+"/$revert?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	var res struct {
		Meta struct{ VersionID string }
	}
	json.Unmarshal(b, &res)
	fmt.Fprintf(out, "%s/%s: version %s written back as version %s\n", typ, id, to, res.Meta.VersionID)
	return nil
}

func runConflicts(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("conflicts", "[list [--status open|resolved|all] | show ID | resolve ID keep|take|FILE.json] [--server URL --token T | --data DIR]", errOut)
	var cf clientFlags
	var status string
	cf.add(f)
	f.string(&status, "status", "open", "which conflicts to list: open, resolved or all")
	if err := f.parse(reorder(args)); err != nil {
		return err
	}
	sub := "list"
	rest := f.Args()
	if len(rest) > 0 {
		sub, rest = rest[0], rest[1:]
	}
	c, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	switch sub {
	case "list":
		b, err := c.call(ctx, "GET", "$conflicts?status="+url.QueryEscape(status), nil)
		if err != nil {
			return err
		}
		var pl paramList
		if err := json.Unmarshal(b, &pl); err != nil {
			return fmt.Errorf("unexpected answer: %w", err)
		}
		if len(pl.Parameter) == 0 {
			fmt.Fprintf(out, "no %s conflicts\n", status)
		}
		for _, p := range pl.Parameter {
			fmt.Fprintf(out, "conflict %s  %s  %s  incoming from %s (batch %s) vs version %s from %s\n",
				p.value("id"), p.value("status"), p.value("resource"), p.value("incomingSource"), p.value("batch"), p.value("currentVersion"), p.value("currentSource"))
		}
		return nil
	case "show":
		if len(rest) != 1 {
			return fmt.Errorf("%w: conflicts show ID", errUsage)
		}
		b, err := c.call(ctx, "GET", "$conflicts?id="+url.QueryEscape(rest[0]), nil)
		if err != nil {
			return err
		}
		var pl paramList
		if err := json.Unmarshal(b, &pl); err != nil || len(pl.Parameter) == 0 {
			return fmt.Errorf("unexpected answer")
		}
		p := pl.Parameter[0]
		fmt.Fprintf(out, "conflict %s on %s (%s)\n", p.value("id"), p.value("resource"), p.value("status"))
		// What differs first, as phr diff shows it; then both sides whole.
		sides := map[string][]byte{}
		for _, x := range p.Part {
			sides[x.Name] = x.Resource
		}
		if cur, in := sides["current"], sides["incoming"]; len(cur) > 0 && len(in) > 0 {
			// Who says what is in the header: meta.source is not a
			// difference (nor is it to the merge).
			changes, err := importer.Diff(withoutSource(cur), withoutSource(in))
			if err != nil {
				return fmt.Errorf("conflict %s: %w", rest[0], err)
			}
			fmt.Fprintf(out, "--- differences (current -> incoming): %d\n", len(changes))
			for _, ch := range changes {
				fmt.Fprintln(out, changeLine(ch.Op, ch.Path, string(ch.Old), string(ch.New)))
			}
		}
		for _, x := range p.Part {
			if len(x.Resource) > 0 {
				who := p.value("incomingSource")
				if x.Name == "current" {
					who = p.value("currentSource")
				}
				fmt.Fprintf(out, "--- %s (from %s):\n", x.Name, who)
				// Indented as sent: the members in their order, and
				// decimals with their digits (1.50 stays 1.50).
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, x.Resource, "", "  "); err != nil {
					return fmt.Errorf("conflict %s: the %s side is not JSON: %w", rest[0], x.Name, err)
				}
				fmt.Fprintf(out, "%s\n", pretty.Bytes())
			}
		}
		return nil
	case "resolve":
		if len(rest) != 2 {
			return fmt.Errorf("%w: conflicts resolve ID keep|take|MERGED.json", errUsage)
		}
		q := url.Values{"id": {rest[0]}}
		var body io.Reader
		switch rest[1] {
		case "keep", "take":
			q.Set("action", rest[1])
		default:
			mf, err := os.Open(rest[1])
			if err != nil {
				return fmt.Errorf("%w: %q is neither keep, take nor a readable merged resource file: %v", errUsage, rest[1], err)
			}
			defer mf.Close()
			body = mf
			q.Set("action", "merge")
		}
		b, err := c.call(ctx, "POST", "$resolve-conflict?"+q.Encode(), body, "Content-Type", "application/fhir+json")
		if err != nil {
			return err
		}
		var res struct {
			ResourceType, ID string
			Meta             struct{ VersionID string }
		}
		json.Unmarshal(b, &res)
		fmt.Fprintf(out, "conflict %s resolved: %s/%s version %s\n", rest[0], res.ResourceType, res.ID, res.Meta.VersionID)
		return nil
	}
	return fmt.Errorf("%w: unknown subcommand %q (list, show, resolve)", errUsage, sub)
}

// withoutSource is a resource's JSON without meta.source (as it is when it
// is not JSON: Diff reports that).
func withoutSource(b []byte) []byte {
	v, err := fhirjson.Parse(b)
	if err != nil {
		return b
	}
	if m := v.Get("meta"); m != nil && m.Kind == fhirjson.Object {
		m.Delete("source")
	}
	return v.Append(nil)
}
