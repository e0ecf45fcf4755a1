package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

var (
	testNow       = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	testOwnerID   = uuid.MustParse("6f1f1b7e-2c0b-4b7a-9a57-0c2b9f1d0a01")
	testWorkspace = uuid.MustParse("6f1f1b7e-2c0b-4b7a-9a57-0c2b9f1d0a02")
	testAgentID   = uuid.MustParse("6f1f1b7e-2c0b-4b7a-9a57-0c2b9f1d0a03")
)

const (
	accessHost = "proxy.example.com"
	wildcard   = "*.apps.example.com"
)

func newKey(t testing.TB, f tokens.Feature, seq int32, n int) tokens.Key {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	k, err := tokens.ParseKey(f, hex.EncodeToString(b), seq, testNow.Add(-time.Hour), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fakeIssuer plays the primary's issue endpoint.
type fakeIssuer struct {
	t        testing.TB
	key      tokens.Key
	calls    atomic.Int64
	mu       sync.Mutex
	last     IssueRequest
	relay    *RelayedResponse
	err      error
	gate     chan struct{} // when set, every call waits for it
	mutate   func(*tokens.SignedToken)
	rawToken string
}

func (f *fakeIssuer) Issue(_ context.Context, req IssueRequest) (IssueResult, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.last = req
	f.mu.Unlock()
	if f.gate != nil {
		<-f.gate
	}
	if f.err != nil {
		return IssueResult{}, f.err
	}
	if f.relay != nil {
		return IssueResult{Relay: f.relay}, nil
	}
	if f.rawToken != "" {
		return IssueResult{Token: f.rawToken}, nil
	}
	tok := tokens.SignedToken{
		Request:      req.AppRequest,
		UserID:       testOwnerID,
		WorkspaceID:  testWorkspace,
		AgentID:      testAgentID,
		AppURL:       "http://127.0.0.1:8080",
		CORSBehavior: "simple",
		Expiry:       testNow.Add(time.Minute),
	}
	if f.mutate != nil {
		f.mutate(&tok)
	}
	s, err := tokens.SignToken(f.key, tok)
	if err != nil {
		f.t.Fatal(err)
	}
	return IssueResult{Token: s}, nil
}

type fixture struct {
	svc    *Service
	issuer *fakeIssuer
	appKey tokens.Key
	apiKey tokens.Key
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	appKey := newKey(t, tokens.FeatureAppToken, 7, 64)
	apiKey := newKey(t, tokens.FeatureAPIKey, 3, 32)
	cfg := Config{
		AccessURL:        &url.URL{Scheme: "https", Host: accessHost},
		DashboardURL:     &url.URL{Scheme: "https", Host: "coder.example.com"},
		WildcardHostname: wildcard,
		Cookies:          tokens.CookieConfig{Secure: true, SameSite: http.SameSiteLaxMode},
	}
	if mod != nil {
		mod(&cfg)
	}
	iss := &fakeIssuer{t: t, key: appKey}
	svc, err := New(Options{
		Config: cfg,
		Keys:   tokens.NewKeySet(appKey, apiKey).Source(func() time.Time { return testNow }),
		Issuer: iss,
		Now:    func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, issuer: iss, appKey: appKey, apiKey: apiKey}
}

func request(host, path string, headers ...string) *Input {
	in := &Input{Method: "GET", Host: host, Path: path, Header: http.Header{}, Peer: netip.MustParseAddr("203.0.113.7"), Scheme: "https"}
	for i := 0; i+1 < len(headers); i += 2 {
		in.Header.Add(headers[i], headers[i+1])
	}
	return in
}

func (f *fixture) sign(t testing.TB, req appurl.Request, mod func(*tokens.SignedToken)) string {
	t.Helper()
	tok := tokens.SignedToken{Request: req.Normalize(), UserID: testOwnerID, WorkspaceID: testWorkspace, AgentID: testAgentID, AppURL: "http://127.0.0.1:8080", Expiry: testNow.Add(time.Minute)}
	if mod != nil {
		mod(&tok)
	}
	s, err := tokens.SignToken(f.appKey, tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var pathReq = appurl.Request{AccessMethod: appurl.AccessMethodPath, BasePath: "/@alice/dev.main/apps/code/", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"}
var subReq = appurl.Request{AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"}

func TestFixedOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		mod        func(*Config)
		in         *Input
		wantStatus int
		wantType   string
		wantBody   string
		wantLoc    string
		// subdomain: answered as Coder's subdomain-app handler would,
		// without the proxy's build version (and nosniff only if the
		// answer is one of the error pages, which always carry it).
		subdomain bool
	}{
		{name: "missing host is 400 JSON", in: request("", "/@alice/dev/apps/code/"), wantStatus: 400, wantType: "application/json", wantBody: "Could not determine request Host."},
		{name: "@me is a 404 page", in: request(accessHost, "/@me/dev/apps/code/"), wantStatus: 404, wantType: "text/html", wantBody: "not @me"},
		{name: "%40me is a 404 page too", in: request(accessHost, "/%40me/dev/apps/code/"), wantStatus: 404, wantType: "text/html", wantBody: "not @me"},
		{name: "path apps disabled is a 403 page", mod: func(c *Config) { c.PathAppsDisabled = true }, in: request(accessHost, "/@alice/dev/apps/code/"), wantStatus: 403, wantType: "text/html", wantBody: "Path-based applications are disabled"},
		{name: "invalid subdomain is a 400 page", in: request("not--an--app.apps.example.com", "/"), wantStatus: 400, wantType: "text/html", wantBody: "Invalid Application URL", subdomain: true},
		{name: "coder-logout redirects to the access URL", in: request("coder-logout.apps.example.com", "/"), wantStatus: 303, wantLoc: "https://" + accessHost, subdomain: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) {
				c.Version = "v9.8.7"
				if tt.mod != nil {
					tt.mod(c)
				}
			})
			d := f.svc.Check(context.Background(), tt.in)
			version, sniff := d.Header.Values("X-Coder-Build-Version"), d.Header.Values("X-Content-Type-Options")
			if tt.subdomain && len(version) != 0 {
				t.Errorf("subdomain host's answer has X-Coder-Build-Version %q", version)
			}
			if !tt.subdomain && (len(version) != 1 || version[0] != "v9.8.7" || len(sniff) != 1 || sniff[0] != "nosniff") {
				t.Errorf("X-Coder-Build-Version %q, X-Content-Type-Options %q: want v9.8.7 and nosniff, once each", version, sniff)
			}
			if d.Allow {
				t.Fatalf("allowed, want %d", tt.wantStatus)
			}
			if d.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", d.Status, tt.wantStatus, d.Body)
			}
			if tt.wantType != "" && !strings.HasPrefix(d.Header.Get("Content-Type"), tt.wantType) {
				t.Errorf("content type %q, want %s", d.Header.Get("Content-Type"), tt.wantType)
			}
			if !strings.Contains(string(d.Body), tt.wantBody) {
				t.Errorf("body %q does not contain %q", d.Body, tt.wantBody)
			}
			if tt.wantLoc != "" && strings.TrimSuffix(d.Header.Get("Location"), "/") != tt.wantLoc {
				t.Errorf("Location %q, want %q", d.Header.Get("Location"), tt.wantLoc)
			}
			if n := f.issuer.calls.Load(); n != 0 {
				t.Errorf("primary asked %d times for a request answered locally", n)
			}
		})
	}
}

func TestNotAnAppIsAllowedUntouched(t *testing.T) {
	f := newFixture(t, nil)
	d := f.svc.Check(context.Background(), request(accessHost, "/some/dashboard/path"))
	if !d.Allow || d.Outcome != "not_app" || len(d.UpstreamHeader) != 0 {
		t.Fatalf("got %+v", d)
	}
}

func TestErrorPagesEscapeInput(t *testing.T) {
	f := newFixture(t, nil)
	d := f.svc.Check(context.Background(), request("x<script>alert(1)<--a.apps.example.com", "/"))
	if d.Allow || strings.Contains(string(d.Body), "<script>") {
		t.Fatalf("unescaped input in page: allow=%v body=%s", d.Allow, d.Body)
	}
}

func TestSmuggledKeyHandOff(t *testing.T) {
	f := newFixture(t, nil)
	jwe, err := tokens.EncryptAPIKey(f.apiKey, "abcdefghij-0123456789012345678901", testNow)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{}
	q.Set(tokens.SmuggledAPIKeyQueryParam, jwe)

	t.Run("subdomain sets the per-wildcard cookie on the parent domain", func(t *testing.T) {
		d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/some/page?b=2&"+q.Encode()+"&a=1"))
		if d.Status != http.StatusSeeOther {
			t.Fatalf("status %d body %s", d.Status, d.Body)
		}
		if got := d.Header.Get("Location"); got != "/some/page?a=1&b=2" {
			t.Errorf("Location %q", got)
		}
		c := parseSetCookie(t, d.Header.Get("Set-Cookie"))
		if c.Name != tokens.SubdomainAppSessionCookie(wildcard) || c.Value != "abcdefghij-0123456789012345678901" {
			t.Errorf("cookie %s=%s", c.Name, c.Value)
		}
		if c.Domain != "apps.example.com" || c.Path != "/" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode {
			t.Errorf("cookie attributes: %s", d.Header.Get("Set-Cookie"))
		}
	})
	t.Run("path app sets the host-only path cookie", func(t *testing.T) {
		d := f.svc.Check(context.Background(), request(accessHost, "/@alice/dev.main/apps/code/?"+q.Encode()))
		if d.Status != http.StatusSeeOther || d.Header.Get("Location") != "/@alice/dev.main/apps/code/" {
			t.Fatalf("status %d Location %q", d.Status, d.Header.Get("Location"))
		}
		c := parseSetCookie(t, d.Header.Get("Set-Cookie"))
		if c.Name != tokens.PathAppSessionCookie || c.Domain != "" || c.Path != "/" {
			t.Errorf("cookie %s", d.Header.Get("Set-Cookie"))
		}
	})
	t.Run("the redirect stays on this origin", func(t *testing.T) {
		for _, p := range []string{"//evil.example/x", "///evil.example/x", `/\evil.example/x`} {
			d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", p+"?"+q.Encode()))
			loc := d.Header.Get("Location")
			if d.Status != http.StatusSeeOther || !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, `/\`) {
				t.Errorf("path %q: status %d Location %q", p, d.Status, loc)
			}
			u, err := url.Parse("https://code--main--dev--alice.apps.example.com" + loc)
			if err != nil || u.Host != "code--main--dev--alice.apps.example.com" {
				t.Errorf("path %q: Location %q resolves to host %v", p, loc, u)
			}
		}
	})
	t.Run("an undecryptable key is a 400 page", func(t *testing.T) {
		d := f.svc.Check(context.Background(), request(accessHost, "/@alice/dev.main/apps/code/?"+tokens.SmuggledAPIKeyQueryParam+"=garbage"))
		if d.Status != 400 || !strings.Contains(string(d.Body), "Could not decrypt API key") || d.Header.Get("Set-Cookie") != "" {
			t.Fatalf("status %d body %s", d.Status, d.Body)
		}
	})
	t.Run("smuggling is refused on the dashboard host", func(t *testing.T) {
		d := f.svc.Check(context.Background(), request("coder.example.com", "/@alice/dev.main/apps/code/?"+q.Encode()))
		if d.Status != 400 || d.Header.Get("Set-Cookie") != "" || !strings.Contains(string(d.Body), "not permitted on the primary access URL") {
			t.Fatalf("status %d body %s", d.Status, d.Body)
		}
	})
}

func parseSetCookie(t *testing.T, line string) *http.Cookie {
	t.Helper()
	c, err := http.ParseSetCookie(line)
	if err != nil {
		t.Fatalf("Set-Cookie %q: %v", line, err)
	}
	return c
}

func TestValidCookieAllowsWithoutThePrimary(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.sign(t, subReq, nil)
	in := request("code--main--dev--alice.apps.example.com", "/x",
		"Cookie", "theme=dark; "+tokens.SignedAppTokenCookie+"="+tok+"; coder_session_token=secret; "+tokens.SubdomainAppSessionCookie(wildcard)+"=k; z=1")
	d := f.svc.Check(context.Background(), in)
	if !d.Allow || d.Outcome != "allow_cookie" {
		t.Fatalf("got %+v", d)
	}
	if f.issuer.calls.Load() != 0 {
		t.Errorf("a valid cookie caused %d issue calls", f.issuer.calls.Load())
	}
	if d.UpstreamHeader.Get(edgewire.AppTokenHeader) != tok {
		t.Errorf("app token header not set")
	}
	if got := d.UpstreamHeader.Get("Cookie"); got != "theme=dark; z=1" {
		t.Errorf("upstream Cookie %q", got)
	}
	if d.ResponseHeader.Get("Set-Cookie") != "" {
		t.Errorf("a cookie that was already valid was set again")
	}
	if d.Metadata[edgewire.MetaUserID] != testOwnerID.String() || d.Metadata[edgewire.MetaAgentID] != testAgentID.String() || d.Metadata[edgewire.MetaApp] != "code" || d.Metadata[edgewire.MetaAccessMethod] != "subdomain" {
		t.Errorf("metadata %v", d.Metadata)
	}
}

func TestOnlyCoderCookiesRemovesTheHeader(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.sign(t, subReq, nil)
	d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/", "Cookie", tokens.SignedAppTokenCookie+"="+tok))
	if !d.Allow || d.UpstreamHeader.Get("Cookie") != "" || len(d.UpstreamRemove) != 1 || !strings.EqualFold(d.UpstreamRemove[0], "cookie") {
		t.Fatalf("got %+v", d)
	}
}

func TestTokensThatMustNotBeUsed(t *testing.T) {
	f := newFixture(t, nil)
	otherApp := subReq
	otherApp.AppSlugOrPort = "other"
	otherKey := newKey(t, tokens.FeatureAppToken, 7, 64) // same kid, different secret
	forged, err := tokens.SignToken(otherKey, tokens.SignedToken{Request: subReq, UserID: testOwnerID, AgentID: testAgentID, Expiry: testNow.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"token for another app":     f.sign(t, otherApp, nil),
		"expired beyond the leeway": f.sign(t, subReq, func(s *tokens.SignedToken) { s.Expiry = testNow.Add(-2 * time.Minute) }),
		"signed with another key":   forged,
		"alg none":                  algNone(t, f.sign(t, subReq, nil)),
		"garbage":                   "not.a.token",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			f.issuer.calls.Store(0)
			d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/", "Cookie", tokens.SignedAppTokenCookie+"="+tok))
			if f.issuer.calls.Load() != 1 {
				t.Fatalf("issue calls %d, want 1 (the bad token must be ignored)", f.issuer.calls.Load())
			}
			if !d.Allow || d.UpstreamHeader.Get(edgewire.AppTokenHeader) == tok {
				t.Fatalf("the bad token was forwarded: %+v", d)
			}
		})
	}
}

// algNone re-encodes a token's payload under an unsigned "none" header.
func algNone(t *testing.T, jws string) string {
	t.Helper()
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		t.Fatal("not a compact JWS")
	}
	return "eyJhbGciOiJub25lIiwia2lkIjoiNyJ9." + parts[1] + "."
}

func TestIssueOnFirstVisit(t *testing.T) {
	f := newFixture(t, nil)
	in := request(accessHost, "/@alice/dev.main/apps/code/some/file?x=1", "Cookie", tokens.PathAppSessionCookie+"=sess-path; coder_session_token=sess-generic")
	in.Header.Set("X-Forwarded-For", "198.51.100.9")
	d := f.svc.Check(context.Background(), in)
	if !d.Allow || d.Outcome != "allow_issued" {
		t.Fatalf("got %+v", d)
	}
	got := f.issuer.last
	if got.SessionToken != "sess-path" {
		t.Errorf("session token %q: the access method's cookie comes first", got.SessionToken)
	}
	if got.AppPath != "/some/file" || got.AppQuery != "x=1" || got.PathAppBaseURL != "https://"+accessHost || got.AppHostname != wildcard || got.ClientIP != "198.51.100.9" {
		t.Errorf("issue request %+v", got)
	}
	c := parseSetCookie(t, d.ResponseHeader.Get("Set-Cookie"))
	if c.Name != tokens.SignedAppTokenCookie || c.Path != "/@alice/dev.main/apps/code/" || !c.Expires.Equal(testNow.Add(time.Minute)) || !c.HttpOnly || c.Domain != "" {
		t.Errorf("Set-Cookie %q", d.ResponseHeader.Get("Set-Cookie"))
	}
	if d.UpstreamHeader.Get(edgewire.AppTokenHeader) != c.Value {
		t.Errorf("the dialer did not get the token the browser got")
	}
}

func TestSessionTokenOrder(t *testing.T) {
	cases := []struct {
		name    string
		headers []string
		path    string
		want    string
	}{
		{"generic cookie", []string{"Cookie", "coder_session_token=a"}, "/", "a"},
		{"query parameter", nil, "/?coder_session_token=b", "b"},
		{"header", []string{"Coder-Session-Token", "c"}, "/", "c"},
		{"bearer", []string{"Authorization", "Bearer d"}, "/", "d"},
		{"cookie beats bearer", []string{"Authorization", "Bearer d", "Cookie", "coder_session_token=a"}, "/", "a"},
		{"subdomain cookie first", []string{"Cookie", "coder_session_token=a; " + tokens.SubdomainAppSessionCookie(wildcard) + "=s"}, "/", "s"},
		{"none", nil, "/", ""},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", tt.path, tt.headers...))
			if f.issuer.last.SessionToken != tt.want {
				t.Fatalf("session token %q, want %q", f.issuer.last.SessionToken, tt.want)
			}
		})
	}
}

func TestPrimaryAnswerIsRelayedVerbatim(t *testing.T) {
	f := newFixture(t, nil)
	h := http.Header{}
	h.Set("Location", "https://coder.example.com/api/v2/applications/auth-redirect?redirect_uri=x")
	h.Set("Content-Length", "999")
	h.Add("X-Custom", "1")
	h.Add("X-Custom", "2")
	f.issuer.relay = &RelayedResponse{Status: http.StatusSeeOther, Header: h, Body: []byte("<a>See Other</a>")}
	d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/"))
	if d.Allow || d.Status != 303 || d.Header.Get("Location") != h.Get("Location") || string(d.Body) != "<a>See Other</a>" {
		t.Fatalf("got %+v", d)
	}
	if got := d.Header.Values("X-Custom"); len(got) != 2 {
		t.Errorf("repeated header collapsed: %v", got)
	}
	if d.Header.Get("Content-Length") != "" {
		t.Errorf("framing header relayed")
	}
}

func TestPrimaryDownNeverAllows(t *testing.T) {
	f := newFixture(t, nil)
	f.issuer.err = errors.New("dial tcp: connection refused")
	d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/", "Accept", "text/html"))
	if d.Allow || d.Status != http.StatusBadGateway || !strings.Contains(d.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("got allow=%v status=%d", d.Allow, d.Status)
	}
	// A valid cookie keeps working while the primary is down.
	d = f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/", "Cookie", tokens.SignedAppTokenCookie+"="+f.sign(t, subReq, nil)))
	if !d.Allow {
		t.Fatalf("cached token refused while the primary is down: %+v", d)
	}
}

func TestIssuedTokenMustMatch(t *testing.T) {
	f := newFixture(t, nil)
	f.issuer.mutate = func(s *tokens.SignedToken) { s.Request.AppSlugOrPort = "other" }
	d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/"))
	if d.Allow || d.Status != 500 {
		t.Fatalf("mismatched issued token: allow=%v status=%d", d.Allow, d.Status)
	}
	f.issuer.mutate = nil
	f.issuer.rawToken = "eyJhbGciOiJub25lIn0.e30."
	d = f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/"))
	if d.Allow || d.Status != 500 {
		t.Fatalf("unverifiable issued token: allow=%v status=%d", d.Allow, d.Status)
	}
}

func TestTerminalQueryToken(t *testing.T) {
	f := newFixture(t, nil)
	path := "/api/v2/workspaceagents/" + testAgentID.String() + "/pty"
	termReq := appurl.Request{AccessMethod: appurl.AccessMethodTerminal, BasePath: path, AgentNameOrID: testAgentID.String()}
	tok := f.sign(t, termReq, nil)
	d := f.svc.Check(context.Background(), request(accessHost, path+"?reconnect="+uuid.NewString()+"&"+tokens.SignedAppTokenQueryParam+"="+tok))
	if !d.Allow || f.issuer.calls.Load() != 0 {
		t.Fatalf("terminal with query token: %+v, %d issue calls", d, f.issuer.calls.Load())
	}
	// A non-terminal token in the query parameter ends the search, even
	// with a valid cookie behind it.
	appTok := f.sign(t, pathReq, nil)
	d = f.svc.Check(context.Background(), request(accessHost, "/@alice/dev.main/apps/code/?"+tokens.SignedAppTokenQueryParam+"="+appTok, "Cookie", tokens.SignedAppTokenCookie+"="+appTok))
	if f.issuer.calls.Load() != 1 || d.Outcome != "allow_issued" {
		t.Fatalf("a query-parameter app token was accepted: outcome %s, %d issue calls", d.Outcome, f.issuer.calls.Load())
	}
}

func TestBurstCausesOneIssueCall(t *testing.T) {
	f := newFixture(t, nil)
	f.issuer.gate = make(chan struct{})
	const n = 100
	var joined atomic.Int64
	f.svc.issuer.joined = func() { joined.Add(1) }
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := f.svc.Check(context.Background(), request("code--main--dev--alice.apps.example.com", "/", "Cookie", tokens.SubdomainAppSessionCookie(wildcard)+"=session"))
			if d.Allow {
				allowed.Add(1)
			}
		}()
	}
	// Answer only once every request has joined the flight.
	deadline := time.Now().Add(10 * time.Second)
	for joined.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(f.issuer.gate)
	wg.Wait()
	if got := f.issuer.calls.Load(); got != 1 {
		t.Fatalf("%d issue calls for one burst, want 1", got)
	}
	if allowed.Load() != n {
		t.Fatalf("%d of %d allowed", allowed.Load(), n)
	}
}

// TestIssuedTokenIsReusedBriefly: requests of one signed-in session for one
// app that miss the in-flight issue call still cost no further primary call
// for a few seconds; anonymous answers and relayed answers are never
// reused, and other sessions or apps get their own call.
func TestIssuedTokenIsReusedBriefly(t *testing.T) {
	f := newFixture(t, nil)
	clock := testNow
	f.svc.issuer.now = func() time.Time { return clock }
	session := func(tok string) string { return "coder_session_token=" + tok }
	check := func(host, cookie string) Decision {
		t.Helper()
		var headers []string
		if cookie != "" {
			headers = []string{"Cookie", cookie}
		}
		return f.svc.Check(context.Background(), request(host, "/", headers...))
	}
	const code, echo = "code--main--dev--alice.apps.example.com", "echo--main--dev--alice.apps.example.com"

	if d := check(code, session("a")); !d.Allow {
		t.Fatalf("first request: %+v", d)
	}
	if d := check(code, session("a")); !d.Allow || f.issuer.calls.Load() != 1 {
		t.Fatalf("second request within the reuse window: allow=%v, %d issue calls; want allowed and 1", d.Allow, f.issuer.calls.Load())
	}
	check(code, session("b"))
	check(echo, session("a"))
	if got := f.issuer.calls.Load(); got != 3 {
		t.Fatalf("another session and another app: %d issue calls in all, want 3", got)
	}
	clock = clock.Add(issuedReuse)
	check(code, session("a"))
	if got := f.issuer.calls.Load(); got != 4 {
		t.Fatalf("after the reuse window: %d issue calls in all, want 4", got)
	}

	f.issuer.relay = &RelayedResponse{Status: http.StatusNotFound, Header: http.Header{}, Body: []byte("gone")}
	check(code, session("c"))
	check(code, session("c"))
	check(code, "")
	check(code, "")
	if got := f.issuer.calls.Load(); got != 8 {
		t.Fatalf("relayed and anonymous answers must not be reused: %d issue calls in all, want 8", got)
	}
}

// TestSlowPrimaryAnswersBeforeTheCallerGivesUp: Envoy's ext_authz call
// carries its timeout as the gRPC deadline; when the primary is slower
// than that, the browser must still get the 502 page (not Envoy's empty
// status_on_error answer), so the issue wait ends before the deadline.
func TestSlowPrimaryAnswersBeforeTheCallerGivesUp(t *testing.T) {
	f := newFixture(t, nil)
	f.issuer.gate = make(chan struct{})
	defer close(f.issuer.gate)
	deadline := time.Now().Add(time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	d := f.svc.Check(ctx, request("code--main--dev--alice.apps.example.com", "/", "Accept", "text/html"))
	if left := time.Until(deadline); left <= 0 {
		t.Fatalf("Check answered %v after the caller's deadline", -left)
	}
	if d.Allow || d.Status != http.StatusBadGateway || !strings.Contains(d.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("got allow=%v status=%d, want the 502 page", d.Allow, d.Status)
	}
}
