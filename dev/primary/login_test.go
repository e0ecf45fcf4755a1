package devprimary

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

const authRedirectPath = "/api/v2/applications/auth-redirect"

func form(vals ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(vals); i += 2 {
		v.Set(vals[i], vals[i+1])
	}
	return v.Encode()
}

// TestLoginHandOff walks the browser through the whole hand-off:
// auth-redirect → login page → login → auth-redirect again → back to the
// app with the encrypted key, which the proxy side decrypts with the
// served keys and then uses as the session for issue.
func TestLoginHandOff(t *testing.T) {
	h := newHarness(t, nil)
	wantStatus(t, h.register(uuid.New()), http.StatusCreated)
	appURL := "http://owner-app--main--dev--alice.apps.proxy.test/x?y=1"
	start := authRedirectPath + "?redirect_uri=" + url.QueryEscape(appURL)

	// 1. No dashboard session: to the login page, remembering the way back.
	res := h.do(http.MethodGet, start, nil)
	wantStatus(t, res, http.StatusSeeOther)
	wantLogin := "/login?message=" + url.QueryEscape(signedOutErrorMessage) + "&redirect=" + url.QueryEscape(start)
	if loc := res.header.Get("Location"); loc != wantLogin {
		t.Fatalf("Location\n got %s\nwant %s", loc, wantLogin)
	}

	// 2. The login page carries the way back in its form.
	res = h.do(http.MethodGet, wantLogin, nil)
	wantStatus(t, res, http.StatusOK)
	page := string(res.body)
	if !strings.Contains(page, `<form method="POST" action="/login">`) ||
		!strings.Contains(page, `name="redirect" value="`+html.EscapeString(start)+`"`) ||
		!strings.Contains(page, html.EscapeString(signedOutErrorMessage)) {
		t.Fatalf("login page:\n%s", page)
	}

	// 3. A wrong password stays on the page.
	const formType = "application/x-www-form-urlencoded"
	res = h.do(http.MethodPost, "/login", form("username", "alice", "password", "nope", "redirect", start), "Content-Type", formType)
	wantStatus(t, res, http.StatusUnauthorized)
	if !strings.Contains(string(res.body), "Incorrect username or password.") || res.header.Get("Set-Cookie") != "" {
		t.Fatalf("bad login: %s / %q", res.body, res.header.Get("Set-Cookie"))
	}

	// 4. The right one sets the dashboard session cookie and goes back.
	res = h.do(http.MethodPost, "/login", form("username", "alice", "password", "alice-pw", "redirect", start), "Content-Type", formType)
	wantStatus(t, res, http.StatusSeeOther)
	if loc := res.header.Get("Location"); loc != start {
		t.Fatalf("after login Location %q, want %q", loc, start)
	}
	cookies := (&http.Response{Header: res.header}).Cookies()
	if len(cookies) != 1 || cookies[0].Name != tokens.SessionTokenCookie || !cookies[0].HttpOnly ||
		cookies[0].Path != "/" || cookies[0].SameSite != http.SameSiteLaxMode || cookies[0].Domain != "" {
		t.Fatalf("session cookie %+v", cookies)
	}
	session := cookies[0].Value

	// 5. auth-redirect now sends the browser back to the app, scheme
	// forced to the proxy access URL's, with the encrypted key added.
	res = h.do(http.MethodGet, start, nil, "Cookie", tokens.SessionTokenCookie+"="+session)
	wantStatus(t, res, http.StatusSeeOther)
	loc, err := url.Parse(res.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if loc.Scheme != "https" || loc.Host != "owner-app--main--dev--alice.apps.proxy.test" || loc.Path != "/x" || loc.Query().Get("y") != "1" {
		t.Fatalf("back to the app at %s", loc)
	}
	if !strings.HasPrefix(loc.RawQuery, tokens.SmuggledAPIKeyQueryParam+"=") {
		t.Errorf("query %q (parameters are sorted, the key first)", loc.RawQuery)
	}

	// 6. The proxy side decrypts it with the keys /crypto-keys serves.
	apiKey, err := h.verifier().DecryptAPIKey(context.Background(), loc.Query().Get(tokens.SmuggledAPIKeyQueryParam))
	if err != nil {
		t.Fatalf("decrypt smuggled key: %v", err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9]{10}-[A-Za-z0-9]{22}$`).MatchString(apiKey) {
		t.Fatalf("api key %q is not in coderd's form", apiKey)
	}

	// 7. The app-scoped key opens apps, not terminals, and cannot mint keys.
	wantStatus(t, h.issue(subReq("alice", "dev", "main", "owner-app"), apiKey), http.StatusCreated)
	wantStatus(t, h.issue(pathReq("alice", "dev", "main", "owner-app"), apiKey), http.StatusCreated)
	res = h.issue(termReq(mainAgentID.String()), apiKey)
	wantStatus(t, res, http.StatusNotFound)
	if !strings.Contains(string(res.body), "Application Not Found") {
		t.Errorf("terminal with app key: %s", res.body)
	}
	wantJSONError(t, h.do(http.MethodGet, start, nil, "Coder-Session-Token", apiKey), http.StatusNotFound,
		"Resource not found or you do not have access to this resource", "")
	// The login session itself is a full session.
	wantStatus(t, h.issue(termReq(mainAgentID.String()), session), http.StatusCreated)
}

func TestAuthRedirectValidation(t *testing.T) {
	h := newHarness(t, nil)
	wantStatus(t, h.register(uuid.New()), http.StatusCreated)
	get := func(query string) result {
		return h.do(http.MethodGet, authRedirectPath+query, nil, "Coder-Session-Token", aliceToken)
	}
	wantJSONError(t, get(""), http.StatusBadRequest, "Missing redirect_uri query parameter.", "")
	wantJSONError(t, get("?redirect_uri=%25zz"), http.StatusBadRequest, "Invalid redirect_uri query parameter.", `parse "%zz": invalid URL escape "%zz"`)
	const detail = "The redirect_uri query parameter must be the primary wildcard app hostname, a workspace proxy access URL or a workspace proxy wildcard app hostname."
	for _, bad := range []string{
		"https://evil.test/",
		h.url + "/",                    // the dashboard itself
		"https://apps.proxy.test/",     // the wildcard's parent, not a match
		"https://proxy.test.evil.com/", // access host as a prefix only
	} {
		wantJSONError(t, get("?redirect_uri="+url.QueryEscape(bad)), http.StatusBadRequest, "Invalid redirect_uri.", detail)
	}
	for in, want := range map[string]string{
		// Port ignored for the lookup, kept in the redirect.
		"http://proxy.test:1234/@alice/dev/apps/pub-app/":  "https://proxy.test:1234/@alice/dev/apps/pub-app/",
		"ftp://pub-app--main--dev--alice.apps.proxy.test/": "https://pub-app--main--dev--alice.apps.proxy.test/",
	} {
		res := get("?redirect_uri=" + url.QueryEscape(in))
		wantStatus(t, res, http.StatusSeeOther)
		if loc := res.header.Get("Location"); !strings.HasPrefix(loc, want+"?"+tokens.SmuggledAPIKeyQueryParam+"=") {
			t.Errorf("%s → %s, want %s?…", in, loc, want)
		}
	}
	// A proxy that never registered has no hosts.
	wantStatus(t, get("?redirect_uri="+url.QueryEscape("https://127.0.0.1:9/")), http.StatusBadRequest)
}

func TestAuthRedirectPrimaryWildcard(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AppHostname = "*.apps.dev.test" })
	res := h.do(http.MethodGet, authRedirectPath+"?redirect_uri="+url.QueryEscape("https://code--main--dev--alice.apps.dev.test/"), nil,
		"Coder-Session-Token", aliceToken)
	wantStatus(t, res, http.StatusSeeOther)
	if loc := res.header.Get("Location"); !strings.HasPrefix(loc, "http://code--main--dev--alice.apps.dev.test/?") {
		t.Errorf("Location %s (scheme must be the dashboard's)", loc)
	}
}

func TestLoginRedirectStaysOnDashboard(t *testing.T) {
	h := newHarness(t, nil)
	for in, want := range map[string]string{
		"//evil.test/x":     "/",
		"/\\evil.test":      "/",
		"https://evil.test": "/",
		"":                  "/",
		"/ok?a=1":           "/ok?a=1",
	} {
		res := h.do(http.MethodPost, "/login", form("username", "bob", "password", "bob-pw", "redirect", in), "Content-Type", "application/x-www-form-urlencoded")
		wantStatus(t, res, http.StatusSeeOther)
		if loc := res.header.Get("Location"); loc != want {
			t.Errorf("redirect %q → %q, want %q", in, loc, want)
		}
	}
	// carol has no password: she cannot log in with an empty one.
	res := h.do(http.MethodPost, "/login", form("username", "carol", "password", ""), "Content-Type", "application/x-www-form-urlencoded")
	wantStatus(t, res, http.StatusUnauthorized)
}

func TestPTYToken(t *testing.T) {
	h := newHarness(t, nil)
	wantStatus(t, h.register(uuid.New()), http.StatusCreated)
	const path = "/api/v2/applications/reconnecting-pty-signed-token"
	agent := mainAgentID.String()
	good := map[string]any{"url": "wss://proxy.test:8443/api/v2/workspaceagents/" + agent + "/pty", "agentID": agent}
	post := func(body any, session string) result {
		var hdr []string
		if session != "" {
			hdr = []string{"Coder-Session-Token", session}
		}
		return h.do(http.MethodPost, path, body, hdr...)
	}
	wantJSONError(t, post(good, ""), http.StatusUnauthorized, signedOutErrorMessage, `Cookie "coder_session_token" or query parameter must be provided.`)
	wantJSONError(t, post(good, "nope000000-nopenopenopenopenopeno"), http.StatusUnauthorized, signedOutErrorMessage, "API key is invalid.")

	res := post(good, aliceToken)
	wantStatus(t, res, http.StatusOK)
	var out map[string]string
	res.json(t, &out)
	st, err := h.verifier().VerifyToken(context.Background(), out["signed_token"])
	if err != nil || len(out) != 1 {
		t.Fatalf("pty token %s: %v", res.body, err)
	}
	if st.Request.AccessMethod != "terminal" || st.Request.BasePath != "/api/v2/workspaceagents/"+agent+"/pty/" || st.AgentID != mainAgentID || st.UserID != aliceID {
		t.Errorf("pty token claims %+v", st)
	}
	// Issue outcomes apply: bob may not open alice's terminal.
	res = post(good, bobToken)
	wantStatus(t, res, http.StatusNotFound)

	for _, tc := range []struct {
		name            string
		body            any
		message, detail string
	}{
		{"bad json", "{", "Request body must be valid JSON.", "unexpected EOF"},
		{"http scheme", map[string]any{"url": "https://proxy.test:8443/api/v2/workspaceagents/" + agent + "/pty", "agentID": agent}, "Invalid URL.", `invalid URL scheme "https", expected 'ws' or 'wss'`},
		{"bad url", map[string]any{"url": "wss://proxy.test:8443/%zz", "agentID": agent}, "Invalid URL.", `parse "wss://proxy.test:8443/%zz": invalid URL escape "%zz"`},
		{"other agent in path", map[string]any{"url": "wss://proxy.test:8443/api/v2/workspaceagents/" + disAgentID.String() + "/pty", "agentID": agent}, "Invalid URL path.", "The provided URL is not a valid reconnecting PTY endpoint URL."},
		{"not a proxy", map[string]any{"url": "wss://evil.test/api/v2/workspaceagents/" + agent + "/pty", "agentID": agent}, "Invalid hostname in URL.", "The hostname must be the primary wildcard app hostname, a workspace proxy access URL or a workspace proxy wildcard app hostname."},
		{"wildcard host is not enough", map[string]any{"url": "wss://x.apps.proxy.test/api/v2/workspaceagents/" + agent + "/pty", "agentID": agent}, "Invalid hostname in URL.", "The hostname must be the primary wildcard app hostname, a workspace proxy access URL or a workspace proxy wildcard app hostname."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantJSONError(t, post(tc.body, aliceToken), http.StatusBadRequest, tc.message, tc.detail)
		})
	}
	res = post(map[string]any{}, aliceToken)
	wantStatus(t, res, http.StatusBadRequest)
	if string(res.body) != `{"message":"Validation failed.","validations":[{"field":"url","detail":"Validation failed for tag \"required\" with value: \"\""},{"field":"agentID","detail":"Validation failed for tag \"required\" with value: \"00000000-0000-0000-0000-000000000000\""}]}`+"\n" {
		t.Errorf("validation body %s", res.body)
	}
}

func TestSessionTokenAccessor(t *testing.T) {
	h := newHarness(t, nil)
	if tok, err := h.s.SessionToken("alice"); err != nil || tok != aliceToken {
		t.Errorf("alice: %q %v", tok, err)
	}
	// A user without catalog tokens gets a minted full-scope one.
	c := testCatalog(t, func(c *Catalog) { c.Users[1].SessionTokens = nil })
	h2 := newHarness(t, func(o *Options) { o.Catalog = c })
	tok, err := h2.s.SessionToken(bobID.String())
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h2.issue(subReq("alice", "dev", "main", "auth-app"), tok), http.StatusCreated)
	if _, err := h.s.SessionToken("zed"); err == nil {
		t.Error("unknown user accepted")
	}
	if got := h.s.LoginURL("/x"); got != h.url+"/login?redirect=%2Fx" {
		t.Errorf("LoginURL %s", got)
	}
}

// TestSmuggledKeyAcrossRotation: a key encrypted just before a rotation
// still decrypts with the served keys afterwards (old key kept until its
// deletes_at); new hand-offs use the new key.
func TestSmuggledKeyAcrossRotation(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.KeyRotation = time.Hour })
	wantStatus(t, h.register(uuid.New()), http.StatusCreated)
	handOff := func() string {
		res := h.do(http.MethodGet, authRedirectPath+"?redirect_uri="+url.QueryEscape("https://proxy.test/"), nil, "Coder-Session-Token", aliceToken)
		wantStatus(t, res, http.StatusSeeOther)
		loc, err := url.Parse(res.header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		return loc.Query().Get(tokens.SmuggledAPIKeyQueryParam)
	}
	before := handOff()
	if err := h.s.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	after := handOff()
	v := h.verifier()
	for name, enc := range map[string]string{"before": before, "after": after} {
		if _, err := v.DecryptAPIKey(context.Background(), enc); err != nil {
			t.Errorf("%s rotation: %v", name, err)
		}
	}
	if k, _ := h.s.SigningKey(tokens.FeatureAPIKey); k.Sequence != 2 {
		t.Errorf("api key feature signs with %d", k.Sequence)
	}
}
