package portal

import "net/http"

// extraRoutes adds the pages over the import, export and sharing APIs.
func (p *Portal) extraRoutes(m *http.ServeMux) {}
