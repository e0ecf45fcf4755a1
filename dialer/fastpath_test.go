package dialer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

// swappableKeys is a key source whose set a test replaces (the primary
// withdrawing a key).
type swappableKeys struct {
	mu  sync.Mutex
	set *tokens.KeySet
}

func (s *swappableKeys) VerifyingKey(ctx context.Context, f tokens.Feature, kid string) (tokens.Key, error) {
	s.mu.Lock()
	set := s.set
	s.mu.Unlock()
	return set.Lookup(f, kid, time.Now())
}

func (s *swappableKeys) replace(keys ...tokens.Key) {
	s.mu.Lock()
	s.set = tokens.NewKeySet(keys...)
	s.mu.Unlock()
}

// policyApp answers like a careless app: Coder cookies (one nameless),
// its own CORS headers and Vary values, and echoes what it received.
func policyApp(t *testing.T, hits *atomic.Int32) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h := w.Header()
		h.Set("X-App-Cookie", strings.Join(r.Header.Values("Cookie"), " | "))
		h.Set("X-App-Query", r.URL.RawQuery)
		h.Add("Set-Cookie", "coder_session_token=planted; Path=/")
		h.Add("Set-Cookie", "=coder_signed_app_token=planted")
		h.Add("Set-Cookie", "app=1")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Vary", "Accept-Encoding, Origin")
		_, _ = io.WriteString(w, "hello from app")
	}))
	t.Cleanup(app.Close)
	return app
}

// policyCase is an app URL the response policy is checked on.
type policyCase struct {
	name, url string
	req       appurl.Request
	// wantNosniff: the policy adds nosniff (path apps, not subdomain apps).
	wantNosniff bool
}

// policyCases are the code app as a path app and as a subdomain app, with
// rest after the app's base.
func policyCases(scheme, rest string) []policyCase {
	return []policyCase{
		{"path app", scheme + "://" + testAccessHost + "/@alice/dev.main/apps/code" + rest, pathAppRequest("code"), true},
		{"subdomain app", scheme + "://code--main--dev--alice.apps.example.com" + rest, subdomainAppRequest("code"), false},
	}
}

func (e *testEnv) doCookies(rawURL string, cookies string, hdr http.Header) *http.Response {
	e.t.Helper()
	h := http.Header{"Cookie": {cookies}}
	for k, v := range hdr {
		h[k] = v
	}
	return e.do("GET", rawURL, "", h)
}

// TestFastPathServes checks a request Envoy let through on a verified
// cookie (no authz header): served, Coder cookies and the cold-path marker
// stripped from the upstream request, and the app response policy applied
// (Coder Set-Cookie lines, nameless shadow included, dropped; the app's
// CORS headers gone, Vary: Origin first; nosniff on path apps only).
func TestFastPathServes(t *testing.T) {
	e := newEnv(t, nil).start()
	var hits atomic.Int32
	e.agents.set(8080, policyApp(t, &hits).Listener.Addr().String())
	for _, tt := range policyCases("http", "/x?a=1") {
		t.Run(tt.name, func(t *testing.T) {
			tok := e.token(tt.req, "http://127.0.0.1:8080")
			resp := e.doCookies(tt.url, "coder_signed_app_token="+tok+"; coder_session_token=secret; theme=dark; "+edgewire.ColdPathCookie+"=1", nil)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "hello from app" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if got := resp.Header.Get("X-App-Cookie"); got != "theme=dark" {
				t.Errorf("app saw cookies %q, want only theme=dark", got)
			}
			if got := resp.Header.Get("X-App-Query"); got != "a=1" {
				t.Errorf("app saw query %q", got)
			}
			if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app=1"}) {
				t.Errorf("Set-Cookie %q, want only the app's own", got)
			}
			if got := resp.Header.Values("Vary"); !slices.Equal(got, []string{"Origin", "Accept-Encoding"}) {
				t.Errorf("Vary %q", got)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Error("the app's CORS header reached the browser")
			}
			if got := resp.Header.Get("X-Content-Type-Options") == "nosniff"; got != tt.wantNosniff {
				t.Errorf("nosniff %v, want %v", got, tt.wantNosniff)
			}
		})
	}
	if hits.Load() != 2 {
		t.Errorf("app hits %d, want 2", hits.Load())
	}
	// With Origin the dialer applies the policy too: Envoy runs ext_proc
	// only for cross-origin requests, which decides their CORS on top
	// (e2e TestSameOriginSkipsExtProc). Here a cross-origin request gets
	// no CORS allowance, a same-host Origin to a simple-mode subdomain app
	// is allowed (the token matches the host, so its user owns the app),
	// and a passthru app keeps its own CORS headers.
	const codeHost = "code--main--dev--alice.apps.example.com"
	passthru, err := tokens.SignToken(e.key, tokens.SignedToken{
		Request: subdomainAppRequest("code"), UserID: testUserID, WorkspaceID: testWorkspaceID, AgentID: testAgentID,
		AppURL: "http://127.0.0.1:8080", Expiry: time.Now().Add(time.Minute), CORSBehavior: "passthru",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url, origin, tok string
		wantACAO, wantACAC     string
		wantVary               []string
	}{
		{"path app, cross-origin", "http://" + testAccessHost + "/@alice/dev.main/apps/code/", "https://x.example",
			e.token(pathAppRequest("code"), "http://127.0.0.1:8080"), "", "", []string{"Origin", "Accept-Encoding"}},
		{"subdomain app, cross-origin", "http://" + codeHost + "/", "http://web--main--dev--alice.apps.example.com",
			e.token(subdomainAppRequest("code"), "http://127.0.0.1:8080"), "", "", []string{"Origin", "Accept-Encoding"}},
		{"subdomain app, same origin", "http://" + codeHost + "/", "http://" + codeHost,
			e.token(subdomainAppRequest("code"), "http://127.0.0.1:8080"), "http://" + codeHost, "true", []string{"Origin", "Accept-Encoding"}},
		{"subdomain app, same host, other scheme", "http://" + codeHost + "/", "https://" + codeHost,
			e.token(subdomainAppRequest("code"), "http://127.0.0.1:8080"), "https://" + codeHost, "true", []string{"Origin", "Accept-Encoding"}},
		{"subdomain app, another port", "http://" + codeHost + "/", "http://" + codeHost + ":8443",
			e.token(subdomainAppRequest("code"), "http://127.0.0.1:8080"), "", "", []string{"Origin", "Accept-Encoding"}},
		{"passthru app, same origin", "http://" + codeHost + "/", "http://" + codeHost,
			passthru, "*", "", []string{"Accept-Encoding, Origin"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.doCookies(tt.url, "coder_signed_app_token="+tt.tok, http.Header{"Origin": {tt.origin}})
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.wantACAO {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tt.wantACAO)
			}
			if got := resp.Header.Get("Access-Control-Allow-Credentials"); got != tt.wantACAC {
				t.Errorf("Access-Control-Allow-Credentials %q, want %q", got, tt.wantACAC)
			}
			if got := resp.Header.Values("Vary"); !slices.Equal(got, tt.wantVary) {
				t.Errorf("Vary %q, want %q", got, tt.wantVary)
			}
			if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app=1"}) {
				t.Errorf("Set-Cookie %q, want only the app's own", got)
			}
		})
	}
}

// TestFastPathFallsBackToAuthz checks every fast-path token the dialer
// does not accept sends the browser back to ext_authz: a 307 to the same
// URL expiring the app's token cookie and setting the cold-path marker,
// nothing sent to the app.
func TestFastPathFallsBackToAuthz(t *testing.T) {
	keys := &swappableKeys{}
	e := newEnv(t, func(o *Options) { o.Verifier = &tokens.Verifier{Keys: keys} }).start()
	withdrawn := randomKey(t, 9)
	keys.replace(e.key, withdrawn)
	var hits atomic.Int32
	e.agents.set(8080, policyApp(t, &hits).Listener.Addr().String())
	appURL := "http://127.0.0.1:8080"
	good := pathAppRequest("code")
	const base = "/@alice/dev.main/apps/code/"
	valid := e.token(good, appURL)
	byWithdrawn := e.tokenWith(withdrawn, good, appURL, time.Now().Add(time.Minute))
	// Verified once while its key was current (the dialer caches tokens).
	resp := e.doCookies("http://"+testAccessHost+base, "coder_signed_app_token="+byWithdrawn, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token of a current key: %d", resp.StatusCode)
	}
	keys.replace(e.key)
	hits.Store(0)

	for _, tt := range []struct{ name, query, cookies string }{
		{"expired", "", "coder_signed_app_token=" + e.tokenWith(e.key, good, appURL, time.Now().Add(-3*time.Minute))},
		{"forged", "", "coder_signed_app_token=" + e.tokenWith(randomKey(t, 7), good, appURL, time.Now().Add(time.Minute))},
		{"unknown kid", "", "coder_signed_app_token=" + e.tokenWith(randomKey(t, 8), good, appURL, time.Now().Add(time.Minute))},
		{"withdrawn key", "", "coder_signed_app_token=" + byWithdrawn},
		{"other app", "", "coder_signed_app_token=" + e.token(pathAppRequest("other"), appURL)},
		{"first cookie for another app", "", "coder_signed_app_token=" + e.token(pathAppRequest("other"), appURL) + "; coder_signed_app_token=" + valid},
		{"two valid cookies", "", "coder_signed_app_token=" + valid + "; coder_signed_app_token=" + valid},
		{"smuggled key", "?coder_application_connect_api_key_35e783=k", "coder_signed_app_token=" + valid},
		{"smuggled key, escaped name", "?coder%5Fapplication_connect_api_key_35e783=k", "coder_signed_app_token=" + valid},
		{"token query parameter", "?coder_signed_app_token_23db1dde=" + valid, "coder_signed_app_token=" + valid},
		// Envoy's warm route saw the cookie; Go does not read its value.
		{"unreadable cookie value", "", `coder_signed_app_token="` + valid},
		{"empty cookie value", "", "coder_signed_app_token=; theme=dark"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.doCookies("http://"+testAccessHost+base+"x"+tt.query, tt.cookies, nil)
			resp.Body.Close()
			if resp.StatusCode != http.StatusTemporaryRedirect {
				t.Fatalf("status %d, want 307", resp.StatusCode)
			}
			if loc := resp.Header.Get("Location"); loc != base+"x"+tt.query {
				t.Errorf("Location %q, want the same URL", loc)
			}
			var expired, marker *http.Cookie
			for _, c := range resp.Cookies() {
				switch c.Name {
				case tokens.SignedAppTokenCookie:
					expired = c
				case edgewire.ColdPathCookie:
					marker = c
				}
			}
			if expired == nil || expired.MaxAge >= 0 || expired.Path != base || expired.Domain != "" || !expired.HttpOnly || !expired.Secure {
				t.Errorf("token cookie not expired where authz sets it: %v", resp.Header.Values("Set-Cookie"))
			}
			if marker == nil || marker.MaxAge <= 0 || marker.Path != base {
				t.Errorf("no cold-path marker: %v", resp.Header.Values("Set-Cookie"))
			}
		})
	}
	if hits.Load() != 0 {
		t.Errorf("the app was reached %d times", hits.Load())
	}
	// The cold retry (authz's header, marker cookie) is served, the
	// marker never reaching the app.
	h := http.Header{"Cookie": {edgewire.ColdPathCookie + "=1; theme=dark"}}
	resp = e.do("GET", "http://"+testAccessHost+base+"x", valid, h)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-App-Cookie") != "theme=dark" {
		t.Errorf("cold retry: status %d, app saw cookies %q", resp.StatusCode, resp.Header.Get("X-App-Cookie"))
	}
}

// TestFastPathNotForTerminals: a terminal request without authz's header
// is refused as before, whatever cookie it carries.
func TestFastPathNotForTerminals(t *testing.T) {
	e := newEnv(t, nil).start()
	tok := e.token(terminalRequest(testAgentID), "")
	u := "http://" + testAccessHost + "/api/v2/workspaceagents/" + testAgentID.String() + "/pty?reconnect=" + url.QueryEscape(testAgentID.String())
	resp := e.doCookies(u, "coder_signed_app_token="+tok, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", resp.StatusCode)
	}
}

// fakeAuthz answers Check with a fixed response and records the request.
type fakeAuthz struct {
	mu   sync.Mutex
	got  []*authv3.CheckRequest
	resp func(*authv3.CheckRequest) (*authv3.CheckResponse, error)
}

func (f *fakeAuthz) Check(_ context.Context, in *authv3.CheckRequest, _ ...grpc.CallOption) (*authv3.CheckResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, in)
	f.mu.Unlock()
	return f.resp(in)
}

func (f *fakeAuthz) calls() []*authv3.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), f.got...)
}

// TestFastPathAsksAuthz checks a refused fast-path token gets authz's
// answer in the same round trip: a denial exactly as Envoy writes it, an
// allow served with the token authz attached and its Set-Cookie kept past
// the response policy; a failing authz is a 503; a request with Origin is
// never answered this way (its CORS would follow the wrong claims).
func TestFastPathAsksAuthz(t *testing.T) {
	az := &fakeAuthz{}
	e := newEnv(t, func(o *Options) { o.Authz = az }).start()
	var hits atomic.Int32
	e.agents.set(8080, policyApp(t, &hits).Listener.Addr().String())
	const base = "/@alice/dev.main/apps/code/"
	stale := e.token(pathAppRequest("other"), "http://127.0.0.1:8080")
	fresh := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	hdr := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "Accept": {"text/html"}, "X-Request-Id": {"rid-1"}}

	az.resp = func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_SeeOther},
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "location", Value: "https://dash.example.com/login"}},
				// authz adds what Coder's proxy adds; so did the dialer.
				{Header: &corev3.HeaderValue{Key: "X-Coder-Build-Version", Value: "v9.9.9-test"}},
				{Header: &corev3.HeaderValue{Key: "X-Content-Type-Options", Value: "nosniff"}},
			},
			Body: "see other",
		}}}, nil
	}
	resp := e.doCookies("http://"+testAccessHost+base+"x?q=1", "coder_signed_app_token="+stale+"; theme=dark", hdr)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "https://dash.example.com/login" || string(body) != "see other" {
		t.Errorf("denial: %d %q %q", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if v, n := resp.Header.Values("X-Coder-Build-Version"), resp.Header.Values("X-Content-Type-Options"); len(v) != 1 || len(n) != 1 {
		t.Errorf("denial: X-Coder-Build-Version %q, X-Content-Type-Options %q, want authz's, once each", v, n)
	}
	calls := az.calls()
	if len(calls) != 1 {
		t.Fatalf("%d Check calls", len(calls))
	}
	h := calls[0].GetAttributes().GetRequest().GetHttp()
	if h.GetHost() != testAccessHost || h.GetPath() != base+"x?q=1" || h.GetMethod() != "GET" || h.GetId() != "rid-1" ||
		h.GetHeaders()["cookie"] != "coder_signed_app_token="+stale+"; theme=dark" || h.GetHeaders()["accept"] != "text/html" ||
		calls[0].GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress() != "203.0.113.7" {
		t.Errorf("Check request %v", calls[0])
	}

	az.resp = func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-wsedge-app-token", Value: fresh}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
				{Header: &corev3.HeaderValue{Key: "cookie", Value: "theme=dark"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
			},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "set-cookie", Value: "coder_signed_app_token=" + fresh + "; Path=" + base}}},
		}}}, nil
	}
	resp = e.doCookies("http://"+testAccessHost+base+"x", "coder_signed_app_token="+stale+"; theme=dark", hdr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-App-Cookie") != "theme=dark" {
		t.Errorf("allow: status %d, app saw cookies %q", resp.StatusCode, resp.Header.Get("X-App-Cookie"))
	}
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app=1", "coder_signed_app_token=" + fresh + "; Path=" + base}) {
		t.Errorf("allow: Set-Cookie %q, want the app's own and authz's issued token", got)
	}

	az.resp = func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return nil, errors.New("unavailable") }
	resp = e.doCookies("http://"+testAccessHost+base, "coder_signed_app_token="+stale, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("authz down: status %d, want 503", resp.StatusCode)
	}

	n := len(az.calls())
	resp = e.doCookies("http://"+testAccessHost+base, "coder_signed_app_token="+stale, http.Header{"Origin": {"https://x.example"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || len(az.calls()) != n {
		t.Errorf("with Origin: status %d, %d Check calls, want a redirect through Envoy", resp.StatusCode, len(az.calls())-n)
	}
	if hits.Load() != 1 {
		t.Errorf("app hits %d, want only the allowed one", hits.Load())
	}

	// With Origin on one of Envoy's warm routes (marked so; no ext_proc
	// sees the answer) the dialer asks authz as without Origin, and its
	// own response policy answers CORS: a same-origin page's request
	// with a stale token is served with authz's new token, no bounce.
	az.resp = func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-wsedge-app-token", Value: fresh}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
			},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "set-cookie", Value: "coder_signed_app_token=" + fresh + "; Path=" + base}}},
		}}}, nil
	}
	n = len(az.calls())
	resp = e.doCookies("http://"+testAccessHost+base, "coder_signed_app_token="+stale, http.Header{
		"Origin": {"http://" + testAccessHost}, "Sec-Fetch-Site": {"same-origin"}, edgewire.WarmRouteHeader: {edgewire.WarmRouteValue},
	})
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(az.calls()) != n+1 {
		t.Errorf("with Origin on a warm route: status %d, %d Check calls, want the app after one Check", resp.StatusCode, len(az.calls())-n)
	}
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app=1", "coder_signed_app_token=" + fresh + "; Path=" + base}) {
		t.Errorf("with Origin on a warm route: Set-Cookie %q, want the app's own and authz's issued token", got)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("path app: Access-Control-Allow-Origin %q, want none (the dashboard's CORS is Envoy's)", got)
	}
	if hits.Load() != 2 {
		t.Errorf("app hits %d, want the two allowed ones", hits.Load())
	}
}

// TestFastPathUpgradePolicy checks the response policy holds on a warm
// websocket's 101 too (no Origin: ext_proc never sees it): an app that
// plants a Coder cookie or its own CORS headers on the switch gets
// neither to the browser, as ext_proc strips them on the cold path.
func TestFastPathUpgradePolicy(t *testing.T) {
	e := newEnv(t, nil).start()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Set-Cookie", "coder_session_token=planted; Path=/")
		h.Add("Set-Cookie", "app=1")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Vary", "Accept-Encoding, Origin")
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, b, err := c.Read(r.Context())
		if err == nil {
			_ = c.Write(r.Context(), typ, b)
		}
	}))
	defer app.Close()
	port := appPort(t, app)
	e.agents.set(port, app.Listener.Addr().String())
	for _, tt := range policyCases("ws", "/ws") {
		t.Run(tt.name, func(t *testing.T) {
			tok := e.token(tt.req, "http://127.0.0.1:"+itoa(port))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, tt.url, &websocket.DialOptions{
				HTTPClient: e.client,
				HTTPHeader: http.Header{"Cookie": {"coder_signed_app_token=" + tok}},
			})
			if err != nil {
				t.Fatalf("dial: %v (resp %v)", err, resp)
			}
			defer c.CloseNow()
			if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app=1"}) {
				t.Errorf("101 Set-Cookie %q, want only the app's own", got)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Error("the app's CORS header reached the browser on the 101")
			}
			if got := resp.Header.Values("Vary"); !slices.Equal(got, []string{"Origin", "Accept-Encoding"}) {
				t.Errorf("101 Vary %q", got)
			}
			var wantNosniff []string
			if tt.wantNosniff {
				wantNosniff = []string{"nosniff"}
			}
			if got := resp.Header.Values("X-Content-Type-Options"); !slices.Equal(got, wantNosniff) {
				t.Errorf("101 X-Content-Type-Options %q, want %q", got, wantNosniff)
			}
			if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, b, err := c.Read(ctx); err != nil || string(b) != "ping" {
				t.Fatalf("echo %q, %v", b, err)
			}
		})
	}
}
