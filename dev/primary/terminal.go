package devprimary

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

// The dashboard's web terminal: a page per agent at
// /@<owner>/<workspace>.<agent>/terminal (Coder's dashboard route) that
// runs xterm.js, asks this primary for a reconnecting-PTY token and opens
// the terminal websocket on the workspace proxy. The reconnect ID lives in
// the page's query (?reconnect=<uuid>), so a reload attaches to the same
// PTY and gets its screen replayed.

//go:embed static
var staticFS embed.FS

// staticAsset is one embedded file the dashboard serves under /static/.
type staticAsset struct {
	body        []byte
	contentType string
	etag        string
}

// staticTypes are the content types of the files served; other files of
// the static folder (the vendoring README) are not served.
var staticTypes = map[string]string{
	"terminal.js":             "text/javascript; charset=utf-8",
	"terminal.css":            "text/css; charset=utf-8",
	"xterm/xterm.js":          "text/javascript; charset=utf-8",
	"xterm/xterm.css":         "text/css; charset=utf-8",
	"xterm/addon-fit.js":      "text/javascript; charset=utf-8",
	"xterm/LICENSE":           "text/plain; charset=utf-8",
	"xterm/LICENSE.addon-fit": "text/plain; charset=utf-8",
}

// staticAssets is read once from the embedded files.
var staticAssets = func() map[string]staticAsset {
	out := make(map[string]staticAsset, len(staticTypes))
	for name, ct := range staticTypes {
		b, err := fs.ReadFile(staticFS, "static/"+name)
		if err != nil {
			panic(fmt.Sprintf("devprimary: embedded %s: %v", name, err))
		}
		sum := sha256.Sum256(b)
		out[name] = staticAsset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}()

// handleStatic serves the terminal page's scripts, stylesheets and the
// vendored licences. ETag plus no-cache: a rebuilt binary's assets are
// picked up at once.
func (s *Server) handleStatic(w http.ResponseWriter, r *http.Request) {
	a, ok := staticAssets[strings.TrimPrefix(r.URL.Path, "/static/")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// handleDashboard serves the dashboard pages outside /api/: the home page
// (the workspaces the session may open terminals on) and the terminal
// page. Anything else is a plain 404.
func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request) {
	owner, wsAgent, ok := parseTerminalPath(r.URL.Path)
	if !ok && r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !ok {
		s.handleHomePage(w, r)
		return
	}
	s.handleTerminalPage(w, r, owner, wsAgent)
}

// homeAgent is one line of the home page.
type homeAgent struct {
	Name, Terminal string
	Note           string
}

var homeTemplate = template.Must(template.New("home").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Workspaces - wsedge dev primary</title>
</head>
<body>
<main>
<h1>Workspaces</h1>
<p class="user">Signed in as {{.User}}.</p>
<ul class="agents">
{{- range .Agents}}
<li>{{.Name}} <a href="{{.Terminal}}">Terminal</a>{{if .Note}} <span class="note">({{.Note}})</span>{{end}}</li>
{{- else}}
<li>No workspaces.</li>
{{- end}}
</ul>
</main>
</body>
</html>
`))

// handleHomePage lists the agents of the workspaces the session may open
// terminals on (its own; every one for a site owner), in catalog order,
// each with its terminal page.
func (s *Server) handleHomePage(w http.ResponseWriter, r *http.Request) {
	sess := s.authenticate(requestToken(r))
	if sess == nil || sess.scope != scopeAll {
		s.redirectToLogin(w, r, nil, signedOutErrorMessage)
		return
	}
	var agents []homeAgent
	for _, cw := range s.world.cat.Workspaces {
		id, err := uuid.Parse(cw.ID)
		if err != nil {
			continue
		}
		ws := s.world.workspaces[id]
		if ws == nil || ws.Owner != sess.user && !sess.user.SiteOwner {
			continue
		}
		for _, a := range ws.Agents {
			note := ""
			switch {
			case ws.Stopped:
				note = "workspace stopped"
			case !a.connected.Load():
				note = "agent disconnected"
			}
			agents = append(agents, homeAgent{
				Name:     ws.Owner.Username + "/" + ws.Name + "." + a.Name,
				Terminal: "/@" + ws.Owner.Username + "/" + ws.Name + "." + a.Name + "/terminal",
				Note:     note,
			})
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = homeTemplate.Execute(w, struct {
		User   string
		Agents []homeAgent
	}{sess.user.Username, agents})
}

// parseTerminalPath splits "/@<owner>/<workspace>[.<agent>]/terminal".
func parseTerminalPath(p string) (owner, wsAgent string, ok bool) {
	rest, found := strings.CutPrefix(p, "/@")
	if !found {
		return "", "", false
	}
	rest, found = strings.CutSuffix(rest, "/terminal")
	if !found {
		return "", "", false
	}
	owner, wsAgent, found = strings.Cut(rest, "/")
	if !found || owner == "" || wsAgent == "" || strings.Contains(wsAgent, "/") {
		return "", "", false
	}
	return owner, wsAgent, true
}

// terminalPage is the data of the terminal page.
type terminalPage struct {
	Owner, Workspace, Agent string
	AgentID                 string
	// PTYURL is the terminal websocket on the proxy, without a query
	// (built here from the registered access URL, so a trusted URL).
	PTYURL     template.URL
	TokenPath  string
	TokenParam string
}

var terminalTemplate = template.Must(template.New("terminal").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Terminal - {{.Owner}}/{{.Workspace}}.{{.Agent}}</title>
<link rel="stylesheet" href="/static/xterm/xterm.css">
<link rel="stylesheet" href="/static/terminal.css">
</head>
<body>
<header>
<span class="target">{{.Owner}}/{{.Workspace}}.{{.Agent}}</span>
<span id="status" data-state="loading">Loading…</span>
<button id="reconnect" type="button" hidden>Reconnect</button>
</header>
<main id="terminal" data-agent-id="{{.AgentID}}" data-pty-url="{{.PTYURL}}" data-token-path="{{.TokenPath}}" data-token-param="{{.TokenParam}}"></main>
<script src="/static/xterm/xterm.js"></script>
<script src="/static/xterm/addon-fit.js"></script>
<script src="/static/terminal.js"></script>
</body>
</html>
`))

// handleTerminalPage serves the terminal page of an agent the session may
// open a terminal on: its owner or a site owner. Without a session the
// browser goes to the login page first and comes back; an unknown or
// foreign workspace or agent is a 404 page.
func (s *Server) handleTerminalPage(w http.ResponseWriter, r *http.Request, owner, wsAgent string) {
	sess := s.authenticate(requestToken(r))
	if sess == nil {
		s.redirectToLogin(w, r, nil, signedOutErrorMessage)
		return
	}
	wsName, agentName, _ := strings.Cut(wsAgent, ".")
	var a *agent
	if u := s.world.userByNameOrID(owner); u != nil {
		if ws := s.world.workspaceOf(u, wsName); ws != nil && ws.Owner == u {
			for _, cand := range ws.Agents {
				if agentName == "" && len(ws.Agents) == 1 || agentName != "" && strings.EqualFold(cand.Name, agentName) {
					a = cand
				}
			}
		}
	}
	if a == nil || sess.scope != scopeAll || (a.Workspace.Owner != sess.user && !sess.user.SiteOwner) {
		renderErrorPage(w, errorPage{
			Status:      http.StatusNotFound,
			Title:       "Workspace Not Found",
			Description: "The workspace or agent does not exist or you do not have permission to open its terminal.",
			Actions:     []pageAction{{URL: "/", Text: "Back to site"}},
		})
		return
	}
	edge := s.terminalEdge()
	if edge == nil {
		renderErrorPage(w, errorPage{
			Status:      http.StatusServiceUnavailable,
			Title:       "No Workspace Proxy",
			Description: "No workspace proxy has registered with this primary yet; terminals open through one.",
			Actions:     []pageAction{{Text: "Retry"}},
		})
		return
	}
	pty := url.URL{Scheme: "ws", Host: edge.Host, Path: path.Join("/api/v2/workspaceagents", a.ID.String(), "pty")}
	if edge.Scheme == "https" {
		pty.Scheme = "wss"
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	// Scripts only from here (no inline code, no eval); xterm.js adds
	// <style> elements of its own; the websocket goes to the proxy.
	h.Set("Content-Security-Policy", fmt.Sprintf(
		"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; font-src 'self'; connect-src 'self' %s://%s; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
		pty.Scheme, pty.Host))
	w.WriteHeader(http.StatusOK)
	_ = terminalTemplate.Execute(w, terminalPage{
		Owner:      a.Workspace.Owner.Username,
		Workspace:  a.Workspace.Name,
		Agent:      a.Name,
		AgentID:    a.ID.String(),
		PTYURL:     template.URL(pty.String()), //nolint:gosec // built from the proxy's registered access URL
		TokenPath:  "/api/v2/applications/reconnecting-pty-signed-token",
		TokenParam: tokens.SignedAppTokenQueryParam,
	})
}

// terminalEdge is where the dashboard opens terminals: the access URL of
// the first registered workspace proxy that is not deleted (Coder's
// dashboard opens them on the proxy the user selected). nil when none has
// registered.
func (s *Server) terminalEdge() *url.URL {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.order {
		p := s.proxies[id]
		if !p.registered || p.spec.Deleted {
			continue
		}
		if u, err := url.Parse(p.url); err == nil && u.Host != "" {
			return u
		}
	}
	return nil
}

// TerminalURL is the dashboard page of an agent's web terminal
// ("<dashboard>/@owner/workspace.agent/terminal").
func (s *Server) TerminalURL(owner, workspace, agent string) string {
	u := *s.opts.AccessURL
	u.Path = path.Join(u.Path, "/@"+owner, workspace+"."+agent, "terminal")
	u.RawQuery = ""
	return u.String()
}
