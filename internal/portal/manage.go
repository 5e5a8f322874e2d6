package portal

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
)

// The admin pages manage users and OAuth clients through the sign-in
// service's admin API (/admin/users, /admin/clients), called in-process
// with the admin's own token, so the API decides what an admin may do.

func (p *Portal) manageRoutes(m *http.ServeMux) {
	m.Handle("GET /manage/users", p.adminPage(p.users))
	m.Handle("POST /manage/users", p.adminPage(p.userAdd))
	m.Handle("POST /manage/users/{id}/remove", p.adminPage(p.userRemove))
	m.Handle("GET /manage/clients", p.adminPage(p.clients))
	m.Handle("POST /manage/clients", p.adminPage(p.clientAdd))
	m.Handle("POST /manage/clients/{id}/remove", p.adminPage(p.clientRemove))
}

// adminPage wraps a page only administrators may open.
func (p *Portal) adminPage(h func(q *req) error) http.Handler {
	return p.page(func(q *req) error {
		if !q.sess.Admin() {
			return fhir.Forbidden("only administrators may open this page")
		}
		return h(q)
	})
}

var jsonHeader = http.Header{"Accept": {"application/json"}, "Content-Type": {"application/json"}}

// adminJSON calls the admin API and decodes its JSON answer into out.
func (q *req) adminJSON(method, path string, in, out any) error {
	var body *bytes.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	var res *response
	var err error
	if body != nil {
		res, err = q.api.do(method, path, body, jsonHeader)
	} else {
		res, err = q.api.do(method, path, nil, jsonHeader)
	}
	if err != nil {
		return err
	}
	if out != nil && len(res.Body) > 0 {
		if err := json.Unmarshal(res.Body, out); err != nil {
			return fhir.Errorf(http.StatusBadGateway, "exception", "the answer of %s could not be read: %v", path, err)
		}
	}
	return nil
}

type userView struct {
	ID, Email, Role, Patient, Created string
}

func (p *Portal) users(q *req) error {
	return p.renderUsers(q, http.StatusOK, "", "")
}

func (p *Portal) renderUsers(q *req, status int, msg, formErr string) error {
	var users []userView
	err := q.adminJSON(http.MethodGet, "/admin/users", nil, &users)
	data := map[string]any{"Title": "Users", "Users": users, "Message": msg, "FormError": formErr}
	if err != nil {
		data["Error"] = fhir.AsError(err).Error()
	}
	return p.render(q, status, "users", data)
}

func (p *Portal) userAdd(q *req) error {
	f := q.r.PostForm
	in := map[string]string{"email": strings.TrimSpace(f.Get("email")), "role": f.Get("role"), "patient": strings.TrimSpace(f.Get("patient")), "password": f.Get("password")}
	var u userView
	if err := q.adminJSON(http.MethodPost, "/admin/users", in, &u); err != nil {
		fe := fhir.AsError(err)
		if fe.Status == http.StatusBadRequest || fe.Status == http.StatusConflict {
			return p.renderUsers(q, fe.Status, "", fe.Error())
		}
		return err
	}
	return p.renderUsers(q, http.StatusCreated, "Added "+u.Email+".", "")
}

func (p *Portal) userRemove(q *req) error {
	id := q.r.PathValue("id")
	if id == q.sess.UserID {
		return fhir.BadRequest("you cannot remove your own account while signed in with it")
	}
	if err := q.adminJSON(http.MethodDelete, "/admin/users/"+url.PathEscape(id), nil, nil); err != nil {
		return err
	}
	http.Redirect(q.w, q.r, "/manage/users", http.StatusSeeOther)
	return nil
}

type clientView struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Scope        string          `json:"scope"`
	JWKSURL      string          `json:"jwks_url"`
	JWKS         json.RawMessage `json:"jwks"`
	RedirectURIs []string        `json:"redirect_uris"`
	Public       bool            `json:"public"`
	Created      string          `json:"created"`
}

func (p *Portal) clients(q *req) error {
	return p.renderClients(q, http.StatusOK, "", "")
}

func (p *Portal) renderClients(q *req, status int, msg, formErr string) error {
	var cs []clientView
	err := q.adminJSON(http.MethodGet, "/admin/clients", nil, &cs)
	data := map[string]any{"Title": "OAuth clients", "Clients": cs, "Message": msg, "FormError": formErr}
	if err != nil {
		data["Error"] = fhir.AsError(err).Error()
	}
	return p.render(q, status, "clients", data)
}

func (p *Portal) clientAdd(q *req) error {
	f := q.r.PostForm
	in := map[string]any{"name": strings.TrimSpace(f.Get("name")), "scope": strings.TrimSpace(f.Get("scope"))}
	if u := strings.TrimSpace(f.Get("jwks_url")); u != "" {
		in["jwks_url"] = u
	}
	if j := strings.TrimSpace(f.Get("jwks")); j != "" {
		if !json.Valid([]byte(j)) {
			return p.renderClients(q, http.StatusBadRequest, "", "jwks: the key set is not valid JSON")
		}
		in["jwks"] = json.RawMessage(j)
	}
	var uris []string
	for _, l := range strings.Fields(f.Get("redirect_uris")) {
		uris = append(uris, l)
	}
	if len(uris) > 0 {
		in["redirect_uris"] = uris
	}
	var c clientView
	if err := q.adminJSON(http.MethodPost, "/admin/clients", in, &c); err != nil {
		fe := fhir.AsError(err)
		if fe.Status == http.StatusBadRequest || fe.Status == http.StatusConflict {
			return p.renderClients(q, fe.Status, "", fe.Error())
		}
		return err
	}
	return p.renderClients(q, http.StatusCreated, "Registered "+c.Name+" as client "+c.ID+".", "")
}

func (p *Portal) clientRemove(q *req) error {
	if err := q.adminJSON(http.MethodDelete, "/admin/clients/"+url.PathEscape(q.r.PathValue("id")), nil, nil); err != nil {
		return err
	}
	http.Redirect(q.w, q.r, "/manage/clients", http.StatusSeeOther)
	return nil
}
