package portal

import (
	"net/http"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/authserver"
)

// AuthSessions serves the portal's sessions from the sign-in service
// (internal/authserver): its session cookie, its principals (a patient
// user confined to their compartment, an admin unconfined) and its CSRF
// tokens. Sign-in and sign-out are its /login and /logout.
type AuthSessions struct{ Server *authserver.Server }

// Session implements Sessions.
func (a AuthSessions) Session(r *http.Request) (*Session, bool) {
	s, ok := a.Server.Session(r)
	if !ok {
		return nil, false
	}
	return &Session{ID: s.ID, UserID: s.UserID, Email: s.Email, Role: s.Role, Patient: s.Patient, CSRF: s.CSRF, Expires: s.Expires}, true
}

func back(s *Session) *authserver.Session {
	if s == nil {
		return nil
	}
	return &authserver.Session{ID: s.ID, UserID: s.UserID, Email: s.Email, Role: s.Role, Patient: s.Patient, CSRF: s.CSRF, Expires: s.Expires}
}

// Principal implements Sessions.
func (a AuthSessions) Principal(s *Session) access.Principal { return a.Server.Principal(back(s)) }

// CheckCSRF implements Sessions.
func (a AuthSessions) CheckCSRF(r *http.Request, s *Session) bool {
	return a.Server.CheckCSRF(r, back(s))
}

// Mount builds the portal and mounts it on mux at /.
func Mount(mux *http.ServeMux, o Options) (*Portal, error) {
	p, err := New(o)
	if err != nil {
		return nil, err
	}
	p.Register(mux)
	return p, nil
}
