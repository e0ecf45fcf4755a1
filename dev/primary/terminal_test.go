package devprimary

import (
	"context"
	"html"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

func sessionCookie(token string) []string {
	return []string{"Cookie", tokens.SessionTokenCookie + "=" + token}
}

// pageAttr reads a data-* attribute of the terminal page's #terminal.
func pageAttr(t *testing.T, page, name string) string {
	t.Helper()
	m := regexp.MustCompile(`<main id="terminal"[^>]* data-` + name + `="([^"]*)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("terminal page has no data-%s:\n%s", name, page)
	}
	return html.UnescapeString(m[1])
}

// TestTerminalPage walks what the page's script does: the page names the
// PTY websocket on the registered proxy and the token endpoint; a POST
// there with the page's values and the same session cookie yields a
// terminal token for that agent and that URL.
func TestTerminalPage(t *testing.T) {
	h := newHarness(t, nil)
	const page = "/@alice/dev.main/terminal"

	// No proxy registered yet: nowhere to open a terminal.
	res := h.do(http.MethodGet, page, nil, sessionCookie(aliceToken)...)
	wantStatus(t, res, http.StatusServiceUnavailable)
	if !strings.Contains(string(res.body), "No workspace proxy") {
		t.Errorf("page before registration: %s", res.body)
	}
	wantStatus(t, h.register(uuid.New()), http.StatusCreated)

	// Anonymous: to the login page, which leads back with the query kept.
	withID := page + "?reconnect=" + uuid.NewString()
	res = h.do(http.MethodGet, withID, nil)
	wantStatus(t, res, http.StatusSeeOther)
	want := "/login?message=" + url.QueryEscape(signedOutErrorMessage) + "&redirect=" + url.QueryEscape(withID)
	if loc := res.header.Get("Location"); loc != want {
		t.Fatalf("anonymous Location\n got %s\nwant %s", loc, want)
	}

	res = h.do(http.MethodGet, withID, nil, sessionCookie(aliceToken)...)
	wantStatus(t, res, http.StatusOK)
	for k, v := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := res.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	csp := res.header.Get("Content-Security-Policy")
	for _, d := range []string{"script-src 'self';", "connect-src 'self' wss://proxy.test:8443;", "default-src 'none';"} {
		if !strings.Contains(csp, d) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, d)
		}
	}
	body := string(res.body)
	if strings.Contains(body, "<script>") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "script-src 'self' 'unsafe-inline'") {
		t.Errorf("inline script or eval allowed: CSP %q\n%s", csp, body)
	}
	ptyURL := pageAttr(t, body, "pty-url")
	if want := "wss://proxy.test:8443/api/v2/workspaceagents/" + mainAgentID.String() + "/pty"; ptyURL != want {
		t.Errorf("pty URL %q, want %q (the proxy's access URL, wss for https)", ptyURL, want)
	}
	if got := pageAttr(t, body, "agent-id"); got != mainAgentID.String() {
		t.Errorf("agent ID %q, want %s", got, mainAgentID)
	}
	if got := pageAttr(t, body, "token-param"); got != tokens.SignedAppTokenQueryParam {
		t.Errorf("token parameter %q, want %q", got, tokens.SignedAppTokenQueryParam)
	}

	// The script's token request, with the cookie the browser sends.
	tokenPath := pageAttr(t, body, "token-path")
	res = h.do(http.MethodPost, tokenPath, map[string]any{"url": ptyURL, "agentID": pageAttr(t, body, "agent-id")}, sessionCookie(aliceToken)...)
	wantStatus(t, res, http.StatusOK)
	var out struct {
		SignedToken string `json:"signed_token"`
	}
	res.json(t, &out)
	st, err := h.verifier().VerifyToken(context.Background(), out.SignedToken)
	if err != nil {
		t.Fatalf("token from %s: %v", tokenPath, err)
	}
	if st.Request.AccessMethod != "terminal" || st.AgentID != mainAgentID || st.UserID != aliceID ||
		st.Request.BasePath != "/api/v2/workspaceagents/"+mainAgentID.String()+"/pty/" {
		t.Errorf("token claims %+v", st)
	}

	// Every script and stylesheet the page loads is served.
	refs := regexp.MustCompile(`(?:src|href)="(/[^"]*)"`).FindAllStringSubmatch(body, -1)
	if len(refs) != 5 {
		t.Errorf("page loads %d assets, want 5 (xterm.js, addon-fit.js, terminal.js and two stylesheets): %v", len(refs), refs)
	}
	for _, m := range refs {
		if r := h.do(http.MethodGet, m[1], nil); r.status != http.StatusOK {
			t.Errorf("page asset %s: %d", m[1], r.status)
		}
	}
}

func TestTerminalPageAccess(t *testing.T) {
	h := newHarness(t, nil)
	wantStatus(t, h.register(uuid.New()), http.StatusCreated)
	for _, tc := range []struct {
		name, path, token string
		status            int
	}{
		{"owner", "/@alice/dev.main/terminal", aliceToken, http.StatusOK},
		{"names are case-insensitive", "/@Alice/DEV.Main/terminal", aliceToken, http.StatusOK},
		{"the only agent needs no name", "/@alice/dev/terminal", aliceToken, http.StatusOK},
		{"site owner", "/@alice/dev.main/terminal", carolToken, http.StatusOK},
		{"another user", "/@alice/dev.main/terminal", bobToken, http.StatusNotFound},
		{"unknown agent", "/@alice/dev.nope/terminal", aliceToken, http.StatusNotFound},
		{"unknown workspace", "/@alice/nope.main/terminal", aliceToken, http.StatusNotFound},
		{"unknown owner", "/@nobody/dev.main/terminal", aliceToken, http.StatusNotFound},
		{"workspace of another owner", "/@bob/dev.main/terminal", aliceToken, http.StatusNotFound},
		{"no @", "/alice/dev.main/terminal", aliceToken, http.StatusNotFound},
		{"extra segment", "/@alice/dev/main/terminal", aliceToken, http.StatusNotFound},
		{"not the terminal", "/@alice/dev.main", aliceToken, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do(http.MethodGet, tc.path, nil, sessionCookie(tc.token)...)
			wantStatus(t, res, tc.status)
			if tc.status == http.StatusOK && !strings.Contains(string(res.body), `data-agent-id="`+mainAgentID.String()+`"`) {
				t.Errorf("page of another agent:\n%s", res.body)
			}
			if tc.status == http.StatusNotFound && strings.Contains(string(res.body), mainAgentID.String()) {
				t.Errorf("the 404 names the agent:\n%s", res.body)
			}
		})
	}
	// A page is not a form target.
	res := h.do(http.MethodPost, "/@alice/dev.main/terminal", "", sessionCookie(aliceToken)...)
	wantStatus(t, res, http.StatusMethodNotAllowed)
	// An expired or unknown session is sent to sign in again.
	res = h.do(http.MethodGet, "/@alice/dev.main/terminal", nil, sessionCookie("nope000000-nopenopenopenopenopeno")...)
	wantStatus(t, res, http.StatusSeeOther)
	if loc := res.header.Get("Location"); !strings.HasPrefix(loc, "/login?") {
		t.Errorf("unknown session sent to %q, want the login page", loc)
	}
}

func TestStaticAssets(t *testing.T) {
	h := newHarness(t, nil)
	for name, ct := range map[string]string{
		"/static/terminal.js":             "text/javascript; charset=utf-8",
		"/static/terminal.css":            "text/css; charset=utf-8",
		"/static/xterm/xterm.js":          "text/javascript; charset=utf-8",
		"/static/xterm/xterm.css":         "text/css; charset=utf-8",
		"/static/xterm/addon-fit.js":      "text/javascript; charset=utf-8",
		"/static/xterm/LICENSE":           "text/plain; charset=utf-8",
		"/static/xterm/LICENSE.addon-fit": "text/plain; charset=utf-8",
	} {
		t.Run(name, func(t *testing.T) {
			res := h.do(http.MethodGet, name, nil)
			wantStatus(t, res, http.StatusOK)
			if got := res.header.Get("Content-Type"); got != ct {
				t.Errorf("Content-Type %q, want %q", got, ct)
			}
			if got := res.header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			want, err := fs.ReadFile(staticFS, strings.TrimPrefix(name, "/"))
			if err != nil {
				t.Fatal(err)
			}
			if string(res.body) != string(want) {
				t.Errorf("body is not the embedded file (%d bytes, want %d)", len(res.body), len(want))
			}
			etag := res.header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			res = h.do(http.MethodGet, name, nil, "If-None-Match", etag)
			wantStatus(t, res, http.StatusNotModified)
		})
	}
	// The licences are the MIT texts of the packages.
	for _, name := range []string{"/static/xterm/LICENSE", "/static/xterm/LICENSE.addon-fit"} {
		if res := h.do(http.MethodGet, name, nil); !strings.Contains(string(res.body), "The xterm.js authors") ||
			!strings.Contains(string(res.body), "Permission is hereby granted, free of charge") {
			t.Errorf("%s is not xterm.js's MIT licence:\n%s", name, res.body)
		}
	}
	for _, name := range []string{"/static/xterm/README.md", "/static/", "/static/xterm/", "/static/nope.js", "/static/xterm/xterm.js.map"} {
		if res := h.do(http.MethodGet, name, nil); res.status != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", name, res.status)
		}
	}
	// The mux cleans the path first (a redirect), so nothing outside the
	// folder is reachable.
	if res := h.do(http.MethodGet, "/static/../terminal.go", nil); res.status == http.StatusOK {
		t.Errorf("/static/../terminal.go served")
	}
	// Other paths outside /api/ are still plain 404s.
	if res := h.do(http.MethodGet, "/nope", nil); res.status != http.StatusNotFound {
		t.Errorf("/nope: %d", res.status)
	}
}

// TestHomePage: where the login lands by default, the agents the session
// may open terminals on, each linking its terminal page.
func TestHomePage(t *testing.T) {
	h := newHarness(t, nil)
	res := h.do(http.MethodGet, "/", nil)
	wantStatus(t, res, http.StatusSeeOther)
	if loc := res.header.Get("Location"); !strings.HasPrefix(loc, "/login?") || !strings.Contains(loc, "redirect=%2F") {
		t.Errorf("anonymous home page sent to %q, want the login page leading back to /", loc)
	}
	links := regexp.MustCompile(`<li>([^ ]+) <a href="([^"]+)">Terminal</a>( <span class="note">\(([^)]*)\)</span>)?</li>`)
	for _, tc := range []struct {
		token string
		want  []string
	}{
		{aliceToken, []string{
			"alice/dev.main /@alice/dev.main/terminal ",
			"alice/off.main /@alice/off.main/terminal workspace stopped",
			"alice/dis.main /@alice/dis.main/terminal agent disconnected",
		}},
		{bobToken, nil},
		{carolToken, []string{ // a site owner sees every workspace
			"alice/dev.main /@alice/dev.main/terminal ",
			"alice/off.main /@alice/off.main/terminal workspace stopped",
			"alice/dis.main /@alice/dis.main/terminal agent disconnected",
		}},
	} {
		res := h.do(http.MethodGet, "/", nil, sessionCookie(tc.token)...)
		wantStatus(t, res, http.StatusOK)
		var got []string
		for _, m := range links.FindAllStringSubmatch(string(res.body), -1) {
			got = append(got, m[1]+" "+m[2]+" "+m[4])
		}
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("home page of %s lists\n  %s\nwant\n  %s", tc.token, strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
		}
		if res.header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", res.header.Get("Content-Type"))
		}
	}
	// The links lead to the terminal pages.
	wantStatus(t, h.register(uuid.New()), http.StatusCreated)
	wantStatus(t, h.do(http.MethodGet, "/@alice/dev.main/terminal", nil, sessionCookie(aliceToken)...), http.StatusOK)
}
