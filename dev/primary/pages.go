package devprimary

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
)

// errorPage is the data of coderd's static error page
// (site.RenderStaticErrorPage): the strings a browser shows.
type errorPage struct {
	Status      int
	Title       string
	Description string
	Warnings    []string
	Actions     []pageAction
}

type pageAction struct {
	// URL empty means "reload this page" (coderd's Retry).
	URL  string
	Text string
}

var errorTemplate = template.Must(template.New("error").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
</head>
<body>
<main>
<h1>{{.Status}} - {{.Title}}</h1>
<p class="description">{{.Description}}</p>
{{- if .Warnings}}
<ul class="warnings">
{{- range .Warnings}}
<li>{{.}}</li>
{{- end}}
</ul>
{{- end}}
<p class="actions">
{{- range .Actions}}
{{- if .URL}}
<a href="{{.URL}}">{{.Text}}</a>
{{- else}}
<a href="javascript:window.location.reload()">{{.Text}}</a>
{{- end}}
{{- end}}
</p>
</main>
</body>
</html>
`))

// renderErrorPage writes an HTML error page as coderd does: Content-Type
// text/html; charset=utf-8, the status, the page.
func renderErrorPage(w http.ResponseWriter, p errorPage) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(p.Status)
	_ = errorTemplate.Execute(w, p)
}

func (s *Server) backToSite() pageAction {
	return pageAction{URL: s.opts.AccessURL.String(), Text: "Back to site"}
}

// Pages of coderd's workspaceapps/errors.go.

func (s *Server) writeApp404(w http.ResponseWriter, warnings []string) {
	renderErrorPage(w, errorPage{
		Status:      http.StatusNotFound,
		Title:       "Application Not Found",
		Description: "The application or workspace you are trying to access does not exist or you do not have permission to access it.",
		Warnings:    warnings,
		Actions:     []pageAction{s.backToSite()},
	})
}

func (s *Server) writeAppInternalError(w http.ResponseWriter) {
	renderErrorPage(w, errorPage{
		Status:      http.StatusInternalServerError,
		Title:       "Internal Server Error",
		Description: "An internal server error occurred.",
		Actions:     []pageAction{s.backToSite()},
	})
}

func (s *Server) writeAppOffline(w http.ResponseWriter, msg string) {
	renderErrorPage(w, errorPage{
		Status:      http.StatusBadGateway,
		Title:       "Application Unavailable",
		Description: msg,
		Actions:     []pageAction{{Text: "Retry"}, s.backToSite()},
	})
}

func (s *Server) writeWorkspaceOffline(w http.ResponseWriter, username, workspace string) {
	ws := *s.opts.AccessURL
	ws.Path = path.Join(s.opts.AccessURL.Path, "@"+username, workspace)
	renderErrorPage(w, errorPage{
		Status:      http.StatusBadRequest,
		Title:       "Workspace Offline",
		Description: fmt.Sprintf("Last workspace transition was to the %q state. Start the workspace to access its applications.", "stop"),
		Actions:     []pageAction{s.backToSite(), {URL: ws.String(), Text: "View workspace"}},
	})
}

var loginTemplate = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sign in - wsedge dev primary</title>
</head>
<body>
<main>
<h1>Sign in to the wsedge dev primary</h1>
{{- if .Message}}
<p class="message">{{.Message}}</p>
{{- end}}
<form method="POST" action="/login">
<input type="hidden" name="redirect" value="{{.Redirect}}">
<label>Username <input name="username" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
`))

type loginPage struct {
	Message  string
	Redirect string
}

func renderLoginPage(w http.ResponseWriter, status int, p loginPage) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = loginTemplate.Execute(w, p)
}

// safeRedirect accepts only a same-origin absolute path as a post-login
// target; anything else (a full URL, "//host", "/\host") becomes "/".
func safeRedirect(s string) string {
	u, err := url.Parse(s)
	if err != nil || s == "" || s[0] != '/' || len(s) > 1 && (s[1] == '/' || s[1] == '\\') || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return s
}
