package dialer

import (
	"net/http"

	"github.com/wsedge/wsedge/coderhttp"
)

// writePage answers with Coder's error page, linking back to the
// dashboard.
func (s *Server) writePage(w http.ResponseWriter, p coderhttp.Page) {
	p.DashboardURL = s.dashboardURL.String()
	p.Write(w)
}
