package devprimary

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
)

const issuePath = "/api/v2/workspaceproxies/me/issue-signed-app-token"

// issueBody is coderd's IssueTokenRequest, spelled out by the test.
type issueBody struct {
	AppRequest     appurl.Request `json:"app_request"`
	PathAppBaseURL string         `json:"path_app_base_url"`
	AppHostname    string         `json:"app_hostname"`
	AppPath        string         `json:"app_path"`
	AppQuery       string         `json:"app_query"`
	SessionToken   string         `json:"session_token"`
}

func (h *harness) issue(b issueBody, session string) result {
	h.t.Helper()
	b.SessionToken = session
	return h.proxy(http.MethodPost, issuePath, b)
}

func (h *harness) issueOK(b issueBody, session string) string {
	h.t.Helper()
	res := h.issue(b, session)
	wantStatus(h.t, res, http.StatusCreated)
	var out map[string]string
	res.json(h.t, &out)
	if len(out) != 1 || out["signed_token_str"] == "" {
		h.t.Fatalf("issue response %s", res.body)
	}
	return out["signed_token_str"]
}

func decodeSegment(tok string, i int) ([]byte, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("token has %d parts", len(parts))
	}
	return base64.RawURLEncoding.DecodeString(parts[i])
}

func pathReq(user, ws, agent, app string) issueBody {
	return issueBody{
		AppRequest: appurl.Request{
			AccessMethod: appurl.AccessMethodPath, BasePath: appurl.PathAppBasePath(user, ws, agent, app),
			UsernameOrID: user, WorkspaceNameOrID: ws, AgentNameOrID: agent, AppSlugOrPort: app,
		},
		PathAppBaseURL: proxyAccessURL,
		AppHostname:    proxyWildcard,
	}
}

func subReq(user, ws, agent, app string) issueBody {
	b := ownerSubdomain(app)
	b.AppRequest.UsernameOrID, b.AppRequest.WorkspaceNameOrID, b.AppRequest.AgentNameOrID = user, ws, agent
	return b
}

func termReq(agentID string) issueBody {
	return issueBody{
		AppRequest: appurl.Request{
			AccessMethod: appurl.AccessMethodTerminal, BasePath: "/api/v2/workspaceagents/" + agentID + "/pty",
			AgentNameOrID: agentID,
		},
		PathAppBaseURL: proxyAccessURL,
	}
}

// Expected outcomes.
const (
	ok201      = "201"
	page404    = "404 Application Not Found"
	json404    = "404 json"
	redirect   = "303 auth-redirect"
	offline400 = "400 Workspace Offline"
	unavail502 = "502 Application Unavailable"
	error500   = "500 Internal Server Error"
)

func TestIssueOutcomes(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob, carol, anon := aliceToken, bobToken, carolToken, ""
	agent := mainAgentID.String()
	for _, tc := range []struct {
		name    string
		req     issueBody
		session string
		want    string
		warning string
	}{
		// Owner, other user, anonymous × path apps (forced to owner).
		{"owner path owner-app", pathReq("alice", "dev", "main", "owner-app"), alice, ok201, ""},
		{"owner path by ids", pathReq(aliceID.String(), devID.String(), agent, "pub-app"), alice, ok201, ""},
		{"other path owner-app", pathReq("alice", "dev", "main", "owner-app"), bob, page404, ""},
		{"other path pub-app", pathReq("alice", "dev", "main", "pub-app"), bob, page404, `unable to use configured sharing level &#34;public&#34; because path-based app sharing is disabled`},
		{"anon path pub-app", pathReq("alice", "dev", "main", "pub-app"), anon, redirect, ""},
		{"site owner path owner-app", pathReq("alice", "dev", "main", "owner-app"), carol, page404, `path-based apps with &#34;owner&#34; share level are only accessible by the workspace owner`},
		// × subdomain apps by sharing level.
		{"owner sub owner-app", subReq("alice", "dev", "main", "owner-app"), alice, ok201, ""},
		{"other sub owner-app", subReq("alice", "dev", "main", "owner-app"), bob, page404, ""},
		{"other sub auth-app", subReq("alice", "dev", "main", "auth-app"), bob, ok201, ""},
		{"other sub org-app", subReq("alice", "dev", "main", "org-app"), bob, ok201, ""},
		{"other sub pub-app", subReq("alice", "dev", "main", "pub-app"), bob, ok201, ""},
		{"site owner sub owner-app", subReq("alice", "dev", "main", "owner-app"), carol, ok201, ""},
		{"anon sub owner-app", subReq("alice", "dev", "main", "owner-app"), anon, redirect, ""},
		{"anon sub auth-app", subReq("alice", "dev", "main", "auth-app"), anon, redirect, ""},
		{"anon sub pub-app", subReq("alice", "dev", "main", "pub-app"), anon, ok201, ""},
		{"bad session is anonymous", subReq("alice", "dev", "main", "owner-app"), "nope0nope0-nopenopenopenopenopeno", redirect, ""},
		// Ports: owner unless shared; only on subdomains.
		{"anon shared port", subReq("alice", "dev", "main", "9000"), anon, ok201, ""},
		{"anon unshared port", subReq("alice", "dev", "main", "9001"), anon, redirect, ""},
		{"other unshared port", subReq("alice", "dev", "main", "9001"), bob, page404, ""},
		{"owner https port", subReq("alice", "dev", "main", "8443s"), alice, ok201, ""},
		{"port on path app", pathReq("alice", "dev", "main", "8080"), alice, error500, ""},
		// × terminals.
		{"owner terminal", termReq(agent), alice, ok201, ""},
		{"other terminal", termReq(agent), bob, page404, ""},
		{"site owner terminal", termReq(agent), carol, ok201, ""},
		{"anon terminal", termReq(agent), anon, json404, ""},
		{"unknown agent terminal", termReq("00000000-0000-4000-8000-000000000bad"), alice, page404, ""},
		// Workspace stopped, agent disconnected.
		{"stopped owner", subReq("alice", "off", "main", "pub-app"), alice, offline400, ""},
		{"stopped anon", subReq("alice", "off", "main", "pub-app"), anon, offline400, ""},
		{"disconnected owner", subReq("alice", "dis", "main", "pub-app"), alice, unavail502, ""},
		{"disconnected anon public", subReq("alice", "dis", "main", "pub-app"), anon, unavail502, ""},
		{"disconnected terminal", termReq(disAgentID.String()), alice, unavail502, ""},
		{"disconnected other owner-level", pathReq("alice", "dis", "main", "pub-app"), bob, page404, ""},
		// Not found and invalid.
		{"unknown user", subReq("zed", "dev", "main", "pub-app"), alice, page404, ""},
		{"unknown workspace", subReq("alice", "nope", "main", "pub-app"), alice, page404, ""},
		{"unknown app", subReq("alice", "dev", "main", "nope"), alice, page404, ""},
		{"unknown agent for port", subReq("alice", "dev", "nope", "9000"), alice, page404, ""},
		{"me is invalid", subReq("me", "dev", "main", "pub-app"), alice, error500, ""},
		{"bad access method", func() issueBody {
			b := subReq("alice", "dev", "main", "pub-app")
			b.AppRequest.AccessMethod = "tcp"
			return b
		}(), alice, error500, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.issue(tc.req, tc.session)
			body := string(res.body)
			switch tc.want {
			case ok201:
				wantStatus(t, res, http.StatusCreated)
			case json404:
				wantJSONError(t, res, http.StatusNotFound, "Resource not found or you do not have access to this resource", "")
			case redirect:
				wantStatus(t, res, http.StatusSeeOther)
				if loc := res.header.Get("Location"); !strings.HasPrefix(loc, h.url+"/api/v2/applications/auth-redirect?redirect_uri=") {
					t.Errorf("Location %q", loc)
				}
			default:
				var status int
				var title string
				_, _ = fmt.Sscanf(tc.want, "%d", &status)
				title = strings.SplitN(tc.want, " ", 2)[1]
				wantStatus(t, res, status)
				if ct := res.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("Content-Type %q", ct)
				}
				if !strings.Contains(body, "<title>"+title+"</title>") {
					t.Errorf("page lacks title %q:\n%s", title, body)
				}
				if !strings.Contains(body, `<a href="`+h.url+`">Back to site</a>`) {
					t.Errorf("page lacks the Back to site link:\n%s", body)
				}
			}
			if tc.warning != "" && !strings.Contains(body, tc.warning) {
				t.Errorf("page lacks warning %q:\n%s", tc.warning, body)
			}
		})
	}
	if n := h.s.IssueCalls(); n < 30 {
		t.Errorf("IssueCalls %d", n)
	}
}

func TestIssueErrorPageTexts(t *testing.T) {
	h := newHarness(t, nil)
	res := h.issue(subReq("alice", "dis", "main", "pub-app"), aliceToken)
	wantStatus(t, res, http.StatusBadGateway)
	for _, want := range []string{
		`Agent state is &#34;disconnected&#34;, not &#34;connected&#34;`,
		`<a href="javascript:window.location.reload()">Retry</a>`,
	} {
		if !strings.Contains(string(res.body), want) {
			t.Errorf("502 page lacks %q:\n%s", want, res.body)
		}
	}
	res = h.issue(subReq("alice", "off", "main", "pub-app"), aliceToken)
	for _, want := range []string{
		`Last workspace transition was to the &#34;stop&#34; state. Start the workspace to access its applications.`,
		`<a href="` + h.url + `/@alice/off">View workspace</a>`,
	} {
		if !strings.Contains(string(res.body), want) {
			t.Errorf("400 page lacks %q:\n%s", want, res.body)
		}
	}
	res = h.issue(subReq("alice", "dev", "main", "nope"), aliceToken)
	if !strings.Contains(string(res.body), "The application or workspace you are trying to access does not exist or you do not have permission to access it.") {
		t.Errorf("404 page:\n%s", res.body)
	}
	wantJSONError(t, h.proxy(http.MethodPost, issuePath, "{"), http.StatusBadRequest, "Request body must be valid JSON.", "unexpected EOF")
}

// TestIssuedTokenClaims checks the signed token byte for byte where it
// matters: HS512 with kid, the claim set (docs/protocol.md#signed-app-token), the owner (not the
// visitor) as user_id, and that it verifies with the served keys.
func TestIssuedTokenClaims(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.issueOK(subReq("alice", "dev", "main", "auth-app"), bobToken)
	payload, err := decodeSegment(tok, 1)
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range claims {
		names = append(names, k)
	}
	sort.Strings(names)
	if got := strings.Join(names, ","); got != "agent_id,app_url,cors_behavior,exp,request,user_id,workspace_id" {
		t.Fatalf("claims %s", got)
	}
	want := map[string]string{
		"agent_id":      `"` + mainAgentID.String() + `"`,
		"app_url":       `"http://127.0.0.1:8081"`,
		"cors_behavior": `"passthru"`,
		"exp":           fmt.Sprint(h.clock.Now().Add(time.Minute).Unix()),
		"user_id":       `"` + aliceID.String() + `"`,
		"workspace_id":  `"` + devID.String() + `"`,
		"request":       `{"access_method":"subdomain","base_path":"/","app_prefix":"","username_or_id":"alice","workspace_name_or_id":"dev","agent_name_or_id":"main","app_slug_or_port":"auth-app"}`,
	}
	for k, v := range want {
		if string(claims[k]) != v {
			t.Errorf("claim %s = %s, want %s", k, claims[k], v)
		}
	}
	st, err := h.verifier().VerifyToken(context.Background(), tok)
	if err != nil {
		t.Fatalf("verify with served keys: %v", err)
	}
	if !st.MatchesRequest(subReq("alice", "dev", "main", "auth-app").AppRequest) {
		t.Errorf("token does not match its request: %+v", st.Request)
	}

	// Terminal tokens carry no app URL; port tokens the loopback URL.
	term := h.issueOK(termReq(mainAgentID.String()), aliceToken)
	st, err = h.verifier().VerifyToken(context.Background(), term)
	if err != nil || st.AppURL != "" || st.Request.AccessMethod != appurl.AccessMethodTerminal || st.AgentID != mainAgentID {
		t.Errorf("terminal token %+v, %v", st, err)
	}
	for port, wantURL := range map[string]string{"9000": "http://127.0.0.1:9000", "8443s": "https://127.0.0.1:8443"} {
		st, err = h.verifier().VerifyToken(context.Background(), h.issueOK(subReq("alice", "dev", "main", port), aliceToken))
		if err != nil || st.AppURL != wantURL {
			t.Errorf("port %s token app_url %q, %v", port, st.AppURL, err)
		}
	}
	// A path request naming "workspace.agent" is split by the primary.
	b := pathReq("alice", "dev", "main", "owner-app")
	st, err = h.verifier().VerifyToken(context.Background(), h.issueOK(b, aliceToken))
	if err != nil || st.Request.BasePath != "/@alice/dev.main/apps/owner-app/" || st.Request.AgentNameOrID != "main" {
		t.Errorf("path token %+v, %v", st.Request, err)
	}
}

// TestIssueRedirectURI checks redirect_uri exactly as coderd builds it (docs/protocol.md#issue-outcomes).
func TestIssueRedirectURI(t *testing.T) {
	h := newHarness(t, nil)
	auth := h.url + "/api/v2/applications/auth-redirect?redirect_uri="
	for _, tc := range []struct {
		name string
		req  issueBody
		want string
	}{
		{"subdomain root", subReq("alice", "dev", "main", "owner-app"),
			"https://owner-app--main--dev--alice.apps.proxy.test/"},
		{"subdomain with path and query", func() issueBody {
			b := subReq("alice", "dev", "main", "owner-app")
			b.AppPath, b.AppQuery = "/foo/bar/", "a=1&b=2"
			return b
		}(), "https://owner-app--main--dev--alice.apps.proxy.test/foo/bar?a=1&b=2"},
		{"subdomain with prefix", func() issueBody {
			b := subReq("alice", "dev", "main", "owner-app")
			b.AppRequest.Prefix = "x---"
			return b
		}(), "https://x---owner-app--main--dev--alice.apps.proxy.test/"},
		{"app default query wins over user query", func() issueBody {
			b := subReq("alice", "dev", "main", "query-app")
			b.AppQuery = "mine=1"
			return b
		}(), "https://query-app--main--dev--alice.apps.proxy.test/?folder=/home/coder"},
		{"path app", func() issueBody {
			b := pathReq("alice", "dev", "main", "pub-app")
			b.AppPath = "/x"
			return b
		}(), "https://proxy.test:8443/@alice/dev.main/apps/pub-app/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.issue(tc.req, "")
			wantStatus(t, res, http.StatusSeeOther)
			want := auth + url.QueryEscape(tc.want)
			if loc := res.header.Get("Location"); loc != want {
				t.Errorf("Location\n got %s\nwant %s", loc, want)
			}
			if ct := res.header.Get("Content-Type"); ct != "text/html; charset=utf-8" || !strings.Contains(string(res.body), "See Other</a>") {
				t.Errorf("303 body %q (%s)", res.body, ct)
			}
		})
	}
	// A subdomain request without app_hostname cannot build its URL.
	b := subReq("alice", "dev", "main", "owner-app")
	b.AppHostname = ""
	wantStatus(t, h.issue(b, ""), http.StatusInternalServerError)
}

// TestIssuePathAppOnDashboard: an anonymous path app served on the
// dashboard's own host goes to the dashboard login page instead.
func TestIssuePathAppOnDashboard(t *testing.T) {
	h := newHarness(t, nil)
	b := pathReq("alice", "dev", "main", "owner-app")
	b.PathAppBaseURL = h.url
	res := h.issue(b, "")
	wantStatus(t, res, http.StatusSeeOther)
	want := h.url + "/login?message=" + url.QueryEscape(signedOutErrorMessage) + "&redirect=" + url.QueryEscape("/@alice/dev.main/apps/owner-app/")
	if loc := res.header.Get("Location"); loc != want {
		t.Errorf("Location\n got %s\nwant %s", loc, want)
	}
}

func TestIssueDeploymentSwitches(t *testing.T) {
	t.Run("dangerous path app sharing", func(t *testing.T) {
		h := newHarness(t, func(o *Options) {
			o.Catalog = testCatalog(t, func(c *Catalog) { c.Deployment.DangerousAllowPathAppSharing = true })
		})
		wantStatus(t, h.issue(pathReq("alice", "dev", "main", "pub-app"), ""), http.StatusCreated)
		wantStatus(t, h.issue(pathReq("alice", "dev", "main", "auth-app"), bobToken), http.StatusCreated)
		wantStatus(t, h.issue(pathReq("alice", "dev", "main", "owner-app"), bobToken), http.StatusNotFound)
		// Site owners still need the other switch for owner-level path apps.
		wantStatus(t, h.issue(pathReq("alice", "dev", "main", "owner-app"), carolToken), http.StatusNotFound)
	})
	t.Run("site owner path access", func(t *testing.T) {
		h := newHarness(t, func(o *Options) {
			o.Catalog = testCatalog(t, func(c *Catalog) { c.Deployment.DangerousAllowPathAppSiteOwnerAccess = true })
		})
		wantStatus(t, h.issue(pathReq("alice", "dev", "main", "owner-app"), carolToken), http.StatusCreated)
		wantStatus(t, h.issue(pathReq("alice", "dev", "main", "owner-app"), bobToken), http.StatusNotFound)
	})
	t.Run("template path apps disabled", func(t *testing.T) {
		no := false
		h := newHarness(t, func(o *Options) {
			o.Catalog = testCatalog(t, func(c *Catalog) { c.Template.PathAppsAllowed = &no })
		})
		res := h.issue(pathReq("alice", "dev", "main", "owner-app"), aliceToken)
		wantStatus(t, res, http.StatusNotFound)
		if !strings.Contains(string(res.body), "path-based apps are disabled by the template") {
			t.Errorf("page %s", res.body)
		}
		wantStatus(t, h.issue(subReq("alice", "dev", "main", "owner-app"), aliceToken), http.StatusCreated)
	})
}

func TestResolveAppOwner(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/api/v2/workspaceproxies/me/resolve-app-owner"
	body := func(b issueBody) map[string]any { return map[string]any{"app_request": b.AppRequest} }
	res := h.proxy(http.MethodPost, path, body(subReq("alice", "dev", "main", "owner-app")))
	wantStatus(t, res, http.StatusOK)
	if string(res.body) != `{"owner_id":"`+aliceID.String()+`"}`+"\n" {
		t.Errorf("body %s", res.body)
	}
	// A stopped workspace still has an owner.
	wantStatus(t, h.proxy(http.MethodPost, path, body(subReq("alice", "off", "main", "pub-app"))), http.StatusOK)

	res = h.proxy(http.MethodPost, path, body(pathReq("alice", "dev", "main", "owner-app")))
	wantStatus(t, res, http.StatusBadRequest)
	var e coderhttp.Response
	res.json(t, &e)
	if e.Message != "Invalid access method." {
		t.Errorf("path request: %+v", e)
	}
	res = h.proxy(http.MethodPost, path, body(subReq("me", "dev", "main", "owner-app")))
	wantStatus(t, res, http.StatusBadRequest)
	res.json(t, &e)
	if e.Message != "Invalid app request." || !strings.Contains(e.Detail, `username cannot be "me"`) {
		t.Errorf("me: %+v", e)
	}
	res = h.proxy(http.MethodPost, path, body(subReq("alice", "dev", "main", "nope")))
	wantStatus(t, res, http.StatusNotFound)
	res.json(t, &e)
	if e.Message != "Application not found." {
		t.Errorf("unknown app: %+v", e)
	}
	wantJSONError(t, h.proxy(http.MethodPost, path, "["), http.StatusBadRequest, "Request body must be valid JSON.", "unexpected EOF")
}

func TestAppStats(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/api/v2/workspaceproxies/me/app-stats"
	body := `{"stats":[{"user_id":"` + aliceID.String() + `","workspace_id":"` + devID.String() + `","agent_id":"` + mainAgentID.String() +
		`","access_method":"subdomain","slug_or_port":"code","session_id":"00000000-0000-4000-8000-00000000f00d",` +
		`"session_started_at":"2026-03-01T12:00:00Z","session_ended_at":"0001-01-01T00:00:00Z","requests":3}]}`
	res := h.proxy(http.MethodPost, path, body)
	wantStatus(t, res, http.StatusNoContent)
	wantStatus(t, h.proxy(http.MethodPost, path, `{"stats":[]}`), http.StatusNoContent)
	got := h.s.AppStats()
	if len(got) != 1 {
		t.Fatalf("AppStats %+v", got)
	}
	r := got[0]
	if r.UserID != aliceID || r.AccessMethod != "subdomain" || r.SlugOrPort != "code" || r.Requests != 3 ||
		!r.SessionStartedAt.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) || !r.SessionEndedAt.IsZero() {
		t.Errorf("stored %+v", r)
	}
	wantJSONError(t, h.proxy(http.MethodPost, path, `{"stats":"x"}`), http.StatusBadRequest, "Request body must be valid JSON.",
		"json: cannot unmarshal string into Go struct field appStatsRequest.stats of type []devprimary.StatsReport")
}

func TestSetAgentConnected(t *testing.T) {
	h := newHarness(t, nil)
	req := subReq("alice", "dev", "main", "owner-app")
	wantStatus(t, h.issue(req, aliceToken), http.StatusCreated)
	if err := h.s.SetAgentConnected(mainAgentID, false); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.issue(req, aliceToken), http.StatusBadGateway)
	if err := h.s.SetAgentConnected(mainAgentID, true); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.issue(req, aliceToken), http.StatusCreated)
	if err := h.s.SetAgentConnected(aliceID, true); err == nil {
		t.Error("a user ID accepted as an agent")
	}
}

// TestDemoCatalogServes: the demo works as advertised — alice opens her
// apps, bob opens the shared echo app but not code.
func TestDemoCatalogServes(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Catalog = DemoCatalog() })
	alice, err := h.s.SessionToken("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, _ := h.s.SessionToken("bob")
	for _, app := range []string{"code", "echo", "secure"} {
		wantStatus(t, h.issue(subReq("alice", "dev", "main", app), alice), http.StatusCreated)
	}
	wantStatus(t, h.issue(subReq("alice", "dev", "main", "echo"), bob), http.StatusCreated)
	wantStatus(t, h.issue(subReq("alice", "dev", "main", "code"), bob), http.StatusNotFound)
	wantStatus(t, h.issue(subReq("alice", "dev", "main", "code"), ""), http.StatusSeeOther)
	st, err := h.verifier().VerifyToken(context.Background(), h.issueOK(subReq("alice", "dev", "main", "secure"), alice))
	if err != nil || st.AppURL != "https://127.0.0.1:8443" {
		t.Errorf("secure token %+v %v", st, err)
	}
}
