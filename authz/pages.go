package authz

import "github.com/wsedge/wsedge/coderhttp"

// renderPage returns an HTML deny decision: Coder's error page.
func renderPage(p coderhttp.Page, outcome string) Decision {
	return deny(p.Status, coderhttp.PageHeader(), p.HTML(), outcome)
}
