package coderhttp

import (
	"bytes"
	"html/template"
	"net/http"
	"strconv"
)

// Page is the static HTML error page: the status, a title, a description
// and links to act on. Every field is escaped by html/template.
type Page struct {
	Status      int
	Title       string
	Description string
	// AdditionalInfo is a second paragraph of explanation.
	AdditionalInfo string
	// HideStatus leaves the status code out of the page (the access host's
	// "Head to the Dashboard" page).
	HideStatus bool
	// Retry adds a "Retry" link to the current page.
	Retry bool
	// Action is an additional link, e.g. "Switch to HTTPS".
	Action *Action
	// DashboardURL, when set, adds a link back to the dashboard ("Back to
	// site"; "Head to the Dashboard" when the status is hidden).
	DashboardURL string
}

// Action is a link on a Page.
type Action struct {
	URL  string
	Text string
}

type pageData struct {
	Page
	StatusText string
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
{{if .Action}}<a href="{{.Action.URL}}">{{.Action.Text}}</a>{{end}}
{{if .Retry}}<a href="">Retry</a>{{end}}
{{if .DashboardURL}}<a href="{{.DashboardURL}}">{{if .HideStatus}}Head to the Dashboard{{else}}Back to site{{end}}</a>{{end}}
</div>
</main>
</body>
</html>
`))

// HTML renders the page.
func (p Page) HTML() []byte {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, pageData{Page: p, StatusText: http.StatusText(p.Status)}); err != nil {
		// The template is static and its fields are plain values; this
		// cannot fail short of running out of memory, but never answer
		// with an empty page if it does.
		return []byte(template.HTMLEscapeString(strconv.Itoa(p.Status) + " " + p.Title))
	}
	return buf.Bytes()
}

// PageHeader returns the headers a page is sent with: HTML, never cached,
// never sniffed.
func PageHeader() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	return h
}

// Write answers with the page.
func (p Page) Write(w http.ResponseWriter) {
	body := p.HTML()
	h := w.Header()
	for k, vs := range PageHeader() {
		h[k] = vs
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}
