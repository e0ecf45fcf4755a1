package authz

import (
	"bytes"
	"html/template"
	"net/http"
)

// errorPage is what a browser sees when wsedge itself refuses a request.
// Every field is escaped by html/template.
type errorPage struct {
	Status       int
	Title        string
	Description  string
	DashboardURL string
	RetryEnabled bool
}

var errorPageTemplate = template.Must(template.New("error").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{background:#0f1115;color:#e6e6e6;font-family:system-ui,-apple-system,sans-serif;display:flex;min-height:100vh;align-items:center;justify-content:center;margin:0}
main{max-width:36rem;padding:2rem;text-align:center}
h1{font-size:1.5rem;margin:0 0 1rem}
p{color:#b0b0b0;line-height:1.5}
.status{color:#7a7a7a;font-size:.9rem}
a{color:#7fb0ff}
</style>
</head>
<body>
<main>
<p class="status">{{.Status}}</p>
<h1>{{.Title}}</h1>
<p>{{.Description}}</p>
<p>{{if .RetryEnabled}}<a href="">Retry</a> · {{end}}<a href="{{.DashboardURL}}">Back to site</a></p>
</main>
</body>
</html>
`))

// renderPage returns an HTML deny decision.
func renderPage(p errorPage, outcome string) Decision {
	var buf bytes.Buffer
	if err := errorPageTemplate.Execute(&buf, p); err != nil {
		// The template is static and its fields are strings; this cannot
		// fail short of running out of memory, but never answer with an
		// empty allow-looking body if it does.
		buf.Reset()
		buf.WriteString(http.StatusText(p.Status))
	}
	h := http.Header{}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	return deny(p.Status, h, buf.Bytes(), outcome)
}
