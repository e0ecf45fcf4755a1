package devprimary

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

func TestProxyAuth(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/api/v2/workspaceproxies/me/crypto-keys?feature=workspace_apps_token"
	for _, tc := range []struct {
		name, token, message, detail string
	}{
		{"missing", "", "Missing required external proxy token", ""},
		{"one part", proxyID.String(), "Invalid external proxy token", ""},
		{"three parts", proxyID.String() + ":" + proxySecret + ":x", "Invalid external proxy token", ""},
		{"not a uuid", "proxy:" + proxySecret, "Invalid external proxy token", ""},
		{"short secret", proxyID.String() + ":abc", "Invalid external proxy token", ""},
		{"unknown proxy", uuid.NewString() + ":" + proxySecret, "Invalid external proxy token", "Proxy not found."},
		{"deleted proxy", deletedID.String() + ":" + strings.Repeat("ef", 32), "Invalid external proxy token", "Proxy has been deleted."},
		{"wrong secret", proxyID.String() + ":" + strings.Repeat("00", 32), "Invalid external proxy token", "Invalid proxy token secret."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.token != "" {
				hdr = []string{proxyTokenHeader, tc.token}
			}
			res := h.do(http.MethodGet, path, nil, hdr...)
			wantJSONError(t, res, http.StatusUnauthorized, tc.message, tc.detail)
			if strings.Contains(string(res.body), `"detail"`) != (tc.detail != "") {
				t.Errorf("detail key presence wrong: %s", res.body)
			}
		})
	}
	// Every /me route is behind the same middleware.
	for _, route := range []string{"POST register", "POST deregister", "POST issue-signed-app-token", "POST resolve-app-owner", "POST app-stats", "GET coordinate"} {
		method, name, _ := strings.Cut(route, " ")
		res := h.do(method, "/api/v2/workspaceproxies/me/"+name, "{}")
		wantJSONError(t, res, http.StatusUnauthorized, "Missing required external proxy token", "")
	}
	res := h.proxy(http.MethodGet, path, nil)
	wantStatus(t, res, http.StatusOK)
	if tok := h.s.ProxyTokenOf(proxy2ID); tok != proxy2ID.String()+":"+strings.Repeat("cd", 32) {
		t.Errorf("ProxyTokenOf %q", tok)
	}
}

func TestDefaultProxy(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Proxies = nil })
	tok := h.s.ProxyToken()
	id, secret, ok := strings.Cut(tok, ":")
	if _, err := uuid.Parse(id); !ok || err != nil || len(secret) != 64 {
		t.Fatalf("default proxy token %q", tok)
	}
	wantStatus(t, h.proxy(http.MethodGet, "/api/v2/workspaceproxies/me/crypto-keys?feature=workspace_apps_token", nil), http.StatusOK)
}

func TestNewOptionErrors(t *testing.T) {
	for name, opts := range map[string]Options{
		"no access url": {},
		"short secret":  {AccessURL: mustURL(t, "http://127.0.0.1:1"), Proxies: []ProxySpec{{ID: uuid.New(), Secret: "x"}}},
		"nil proxy id":  {AccessURL: mustURL(t, "http://127.0.0.1:1"), Proxies: []ProxySpec{{}}},
		"duplicate id":  {AccessURL: mustURL(t, "http://127.0.0.1:1"), Proxies: []ProxySpec{{ID: proxyID}, {ID: proxyID}}},
		"bad wildcard":  {AccessURL: mustURL(t, "http://127.0.0.1:1"), AppHostname: "apps.example.com"},
	} {
		if s, err := New(opts); err == nil {
			_ = s.Close()
			t.Errorf("%s: New accepted %+v", name, opts)
		}
	}
}

func TestBuildInfoAndUnknownRoute(t *testing.T) {
	h := newHarness(t, nil)
	res := h.do(http.MethodGet, "/api/v2/buildinfo", nil)
	wantStatus(t, res, http.StatusOK)
	var bi map[string]any
	res.json(t, &bi)
	if bi["dashboard_url"] != h.url || bi["workspace_proxy"] != false || bi["version"] != Version || bi["agent_api_version"] == "" {
		t.Errorf("buildinfo %v", bi)
	}
	for _, k := range []string{"external_url", "deployment_id", "upgrade_message", "telemetry", "provisioner_api_version"} {
		if _, ok := bi[k]; !ok {
			t.Errorf("buildinfo lacks %s", k)
		}
	}
	wantJSONError(t, h.do(http.MethodGet, "/api/v2/nope", nil), http.StatusNotFound, "Route not found.", "")
}

func TestAgentRPCAuth(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/api/v2/workspaceagents/me/rpc?version=2.0"
	wantJSONError(t, h.do(http.MethodGet, path, nil), http.StatusUnauthorized, `Cookie "coder_session_token" must be provided.`, "")
	wantJSONError(t, h.do(http.MethodGet, path, nil, "Coder-Session-Token", "not-a-uuid"), http.StatusUnauthorized,
		"Workspace agent token invalid.", "An agent token must be a valid UUIDv4. (len 10)")
	res := h.do(http.MethodGet, path, nil, "Coder-Session-Token", uuid.NewString())
	wantStatus(t, res, http.StatusUnauthorized)
	// A known token upgrades to the coordinator's websocket.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.url, "http")+path, &websocket.DialOptions{
		HTTPHeader: http.Header{"Coder-Session-Token": {mainToken}},
	})
	if err != nil {
		t.Fatalf("agent websocket: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("status %d", resp.StatusCode)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
}

func TestCoordinateNeedsProxyAndVersion(t *testing.T) {
	h := newHarness(t, nil)
	wantJSONError(t, h.do(http.MethodGet, "/api/v2/workspaceproxies/me/coordinate", nil), http.StatusUnauthorized, "Missing required external proxy token", "")
	res := h.proxy(http.MethodGet, "/api/v2/workspaceproxies/me/coordinate", nil)
	wantStatus(t, res, http.StatusBadRequest)
	if !strings.Contains(string(res.body), "Unknown or unsupported API version") {
		t.Errorf("body %s", res.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.url, "http")+"/api/v2/workspaceproxies/me/coordinate?version=2.0",
		&websocket.DialOptions{HTTPHeader: http.Header{proxyTokenHeader: {h.s.ProxyToken()}}})
	if err != nil {
		t.Fatalf("proxy coordinate websocket: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("status %d", resp.StatusCode)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
}

// TestUnlicensed: without the workspace proxy feature every proxy API call
// gets coderd's 403, before (and whatever) the proxy token.
func TestUnlicensed(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Unlicensed = true })
	for _, r := range []result{
		h.proxy(http.MethodGet, "/api/v2/workspaceproxies/me/crypto-keys?feature=workspace_apps_token", nil),
		h.register(uuid.New()),
		h.do(http.MethodPost, "/api/v2/workspaceproxies/me/issue-signed-app-token", map[string]any{}),
	} {
		var body struct{ Message string }
		r.json(t, &body)
		if r.status != http.StatusForbidden || body.Message != UnlicensedMessage {
			t.Errorf("status %d, message %q; want 403 %q", r.status, body.Message, UnlicensedMessage)
		}
	}
	// The rest of the primary still answers.
	if r := h.do(http.MethodGet, "/api/v2/buildinfo", nil); r.status != http.StatusOK {
		t.Errorf("buildinfo: %d", r.status)
	}
}
