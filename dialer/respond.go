package dialer

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
)

// apiResponse is Coder's standard JSON error body.
type apiResponse struct {
	Message     string            `json:"message"`
	Detail      string            `json:"detail,omitempty"`
	Validations []validationError `json:"validations,omitempty"`
}

// validationError is one entry of apiResponse.Validations.
type validationError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// writeJSON writes v as JSON the way coderd does (HTML-escaped, trailing
// newline).
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(true)
	if err := enc.Encode(v); err != nil {
		http.Error(w, "internal error encoding response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage is a static HTML error page in the spirit of Coder's: a
// title, a description and links to retry or go back to the dashboard.
type errorPage struct {
	Status      int
	Title       string
	Description string
	// HideStatus omits the status code from the page.
	HideStatus bool
	// Retry adds a "Retry" link to the current page.
	Retry bool
	// Dashboard adds a "Back to site" link to the dashboard.
	Dashboard bool
	// Extra is an additional action, e.g. "Switch to HTTPS".
	Extra *pageAction
	// AdditionalInfo is a second paragraph of explanation.
	AdditionalInfo string
}

type pageAction struct {
	URL  string
	Text string
}

type pageData struct {
	errorPage
	StatusText   string
	DashboardURL string
}

var pageTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{if not .HideStatus}}{{.Status}} - {{end}}{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;background:#0b0b0f;color:#e4e4e7;display:flex;min-height:100vh;align-items:center;justify-content:center;margin:0}
main{max-width:560px;padding:32px;text-align:center}
h1{font-size:24px;font-weight:600}
p{color:#a1a1aa;line-height:1.5}
a{display:inline-block;margin:8px;padding:8px 16px;border:1px solid #3f3f46;border-radius:6px;color:#e4e4e7;text-decoration:none}
</style>
</head>
<body>
<main>
{{if not .HideStatus}}<h2>{{.Status}} {{.StatusText}}</h2>{{end}}
<h1>{{.Title}}</h1>
<p>{{.Description}}</p>
{{if .AdditionalInfo}}<p>{{.AdditionalInfo}}</p>{{end}}
<div>
{{if .Extra}}<a href="{{.Extra.URL}}">{{.Extra.Text}}</a>{{end}}
{{if .Retry}}<a href="">Retry</a>{{end}}
{{if .Dashboard}}<a href="{{.DashboardURL}}">{{if .HideStatus}}Head to the Dashboard{{else}}Back to site{{end}}</a>{{end}}
</div>
</main>
</body>
</html>
`))

// renderPage writes an HTML error page.
func (s *Server) renderPage(w http.ResponseWriter, _ *http.Request, p errorPage) {
	var buf bytes.Buffer
	err := pageTemplate.Execute(&buf, pageData{
		errorPage:    p,
		StatusText:   http.StatusText(p.Status),
		DashboardURL: s.dashboardURL.String(),
	})
	if err != nil {
		http.Error(w, strconv.Itoa(p.Status)+" "+p.Title, p.Status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_, _ = w.Write(buf.Bytes())
}
