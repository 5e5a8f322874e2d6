// Package access carries who is asking through a request: the principal's
// permissions, checked by every service before it reads or writes data.
//
// The HTTP layer authenticates the bearer token and stores a Principal in
// the request context; services call Check and InCompartment. A context
// without a principal is refused everything, so a forgotten middleware
// fails closed.
package access

import (
	"context"
	"net/url"
	"slices"
)

// Interaction is a kind of access to resources of one type.
type Interaction byte

// The interactions, named after SMART v2 scope letters.
const (
	Create Interaction = 'c'
	Read   Interaction = 'r'
	Update Interaction = 'u'
	Delete Interaction = 'd'
	Search Interaction = 's'
)

func (i Interaction) String() string {
	switch i {
	case Create:
		return "create"
	case Read:
		return "read"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Search:
		return "search"
	}
	return "unknown"
}

// Principal is an authenticated caller.
type Principal interface {
	// Allows reports whether the caller may do i on resources of type typ.
	Allows(i Interaction, typ string) bool
	// Patient returns the patient id the caller is confined to (patient/
	// scopes, patient users), or "" when the caller is not confined.
	Patient() string
	// Filters returns the search filters (SMART v2 scope queries such as
	// category=laboratory) that every read and search of typ must also
	// satisfy; nil when there are none. Several entries are alternatives
	// (OR), each one's parameters all apply (AND).
	Filters(typ string) []url.Values
	// Subject names the caller for logs and audit (client id, user).
	Subject() string
}

type ctxKey struct{}

// With returns ctx carrying p.
func With(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the principal in ctx, or nil.
func From(ctx context.Context) Principal {
	p, _ := ctx.Value(ctxKey{}).(Principal)
	return p
}

// System is a principal with every permission, for the server's own work
// (migrations, background jobs acting on an owner's behalf are given the
// owner's principal instead) and the command line working on a local data
// directory, which already has full access to the files.
type System struct{ Name string }

// Allows implements Principal.
func (System) Allows(Interaction, string) bool { return true }

// Patient implements Principal.
func (System) Patient() string { return "" }

// Filters implements Principal.
func (System) Filters(string) []url.Values { return nil }

// Subject implements Principal.
func (s System) Subject() string {
	if s.Name == "" {
		return "system"
	}
	return s.Name
}

// InCompartment reports whether a resource whose patient compartments are
// patients is visible to p. Unconfined principals see everything; a
// confined one sees resources in its patient's compartment.
func InCompartment(p Principal, patients []string) bool {
	if p == nil {
		return false
	}
	pid := p.Patient()
	return pid == "" || slices.Contains(patients, pid)
}
