package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	devprimary "github.com/wsedge/wsedge/dev/primary"
	wsstack "github.com/wsedge/wsedge/internal/stack"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tokens"
)

// upstreamEcho answers with the request it received, as JSON.
type upstreamEcho struct {
	Host    string      `json:"host"`
	Path    string      `json:"path"`
	Header  http.Header `json:"header"`
	Cookies []string    `json:"cookies"`
}

func echoUpstream(w http.ResponseWriter, r *http.Request) {
	var cookies []string
	for _, c := range r.Cookies() {
		cookies = append(cookies, c.Name)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(upstreamEcho{Host: r.Host, Path: r.URL.RequestURI(), Header: r.Header, Cookies: cookies})
}

// realAuthz is the real authz service (stack.ServeAuthz: ext_authz +
// ext_proc), as `wsedge authz` runs it, talking to the dev primary.
type realAuthz struct {
	primary *primaryFixture
}

// withRealAuthz puts az's service behind Envoy, the dev primary reachable
// as the dashboard host; once Envoy is up the proxy registers its
// hostnames, as the dialer would (the primary only redirects browsers
// back to registered proxy hosts), and the stack waits until authz has
// its keys.
func withRealAuthz(az *realAuthz) edgeOption {
	return func(s *edgeSetup) {
		t := s.t
		var envoyAddr string
		// Health polls of the registered proxy go to Envoy, never to DNS.
		poller := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, envoyAddr)
		}}}
		p := startPrimary(t, devprimary.Options{HealthInterval: time.Hour, HTTPClient: poller, Logger: slog.New(slog.DiscardHandler)})
		az.primary, s.primary, s.dashboardAddr = p, p.Server, p.addr
		accessURL := &url.URL{Scheme: "http", Host: accessHost}

		azLn := loopback(t)
		s.authzAddr = azLn.Addr().String()
		serveUntilEnd(t, "ServeAuthz", 10*time.Second, func(ctx context.Context) error {
			return wsstack.ServeAuthz(ctx, wsstack.AuthzConfig{
				Primary:          p.client,
				AccessURL:        accessURL,
				WildcardHostname: wildcardHost,
				Listener:         azLn,
				Grace:            time.Second,
				Logger:           slog.New(slog.DiscardHandler),
				KeyRetry:         100 * time.Millisecond,
			})
		})

		s.after = append(s.after, func(h *edge) {
			envoyAddr = h.addr
			if _, err := p.client.Register(context.Background(), primary.RegisterRequest{
				AccessURL: accessURL.String(), WildcardHostname: wildcardHost, ReplicaID: uuid.New(), Hostname: "e2e", Version: "v0.0.0-e2e",
			}); err != nil {
				t.Fatalf("register: %v", err)
			}
			h.waitServing(t)
		})
	}
}

// waitServing waits until authz has its keys: until then it answers 503
// (Envoy's ext_authz failure), afterwards an anonymous request is sent to
// log in.
func (st *edge) waitServing(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, _ := st.get(t, "http://"+codeHost+"/", nil)
		if res.StatusCode == http.StatusSeeOther {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("authz not serving: last status %d", res.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dashboardLogin posts the dashboard's login form as alice.
func (st *edge) dashboardLogin(t *testing.T, redirect string) result {
	t.Helper()
	form := url.Values{"username": {"alice"}, "password": {"alice"}, "redirect": {redirect}}
	req, _ := http.NewRequest(http.MethodPost, "http://"+dashboardHost+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, _ := st.do(t, req)
	return res
}

func decodeEcho(t *testing.T, res result) upstreamEcho {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 from the upstream; body:\n%s", res.StatusCode, res.Body)
	}
	var e upstreamEcho
	if err := json.Unmarshal([]byte(res.Body), &e); err != nil {
		t.Fatalf("upstream answer %q: %v", res.Body, err)
	}
	return e
}

func cookieNamed(jar http.CookieJar, rawURL, name string) *http.Cookie {
	u, _ := url.Parse(rawURL)
	for _, c := range jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestAuthzLoginHandOffThroughEnvoy is a browser's first visit to a
// subdomain app through real Envoy, real authz and the dev primary: login
// redirect, dashboard login, smuggled key, session cookie, token cookie,
// allowed — then what must and must not reach the app.
func TestAuthzLoginHandOffThroughEnvoy(t *testing.T) {
	st := startEdge(t, withRealAuthz(&realAuthz{}), WithUpstream(http.HandlerFunc(echoUpstream)), WithJar())
	appURL := "http://" + codeHost + "/some/page?q=1"

	// 1. Anonymous: the primary's answer, relayed verbatim, sends the
	// browser to auth-redirect on the dashboard.
	res, _ := st.get(t, appURL, nil)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("anonymous: status %d, want 303; body %s", res.StatusCode, res.Body)
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || loc.Host != dashboardHost || loc.Path != "/api/v2/applications/auth-redirect" {
		t.Fatalf("anonymous: Location %q, want the dashboard's auth-redirect", res.Header.Get("Location"))
	}
	if got := loc.Query().Get("redirect_uri"); got != appURL {
		t.Fatalf("redirect_uri %q, want %q", got, appURL)
	}

	// 2. auth-redirect without a dashboard session → login page.
	res, _ = st.get(t, loc.String(), nil)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("auth-redirect without session: status %d", res.StatusCode)
	}
	loginLoc, _ := url.Parse(res.Header.Get("Location"))
	redirect := loginLoc.Query().Get("redirect")

	// 3. Log in; the dashboard sends us back to auth-redirect, which sends
	// us to the app with the encrypted key.
	res = st.dashboardLogin(t, redirect)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: status %d, body %s", res.StatusCode, res.Body)
	}
	next, _ := url.Parse(res.Header.Get("Location"))
	next = (&url.URL{Scheme: "http", Host: dashboardHost}).ResolveReference(next)
	res, _ = st.get(t, next.String(), nil)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("auth-redirect with session: status %d, body %s", res.StatusCode, res.Body)
	}
	back, _ := url.Parse(res.Header.Get("Location"))
	if back.Host != codeHost || back.Query().Get(tokens.SmuggledAPIKeyQueryParam) == "" {
		t.Fatalf("auth-redirect sent us to %s, want the app with %s", back, tokens.SmuggledAPIKeyQueryParam)
	}

	// 4. authz turns the key into the session cookie and redirects to the
	// same URL without the parameter.
	res, _ = st.get(t, back.String(), nil)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("hand-off: status %d, body %s", res.StatusCode, res.Body)
	}
	if got := res.Header.Get("Location"); got != "/some/page?q=1" {
		t.Errorf("hand-off Location %q, want /some/page?q=1", got)
	}
	sessionName := tokens.SubdomainAppSessionCookie(wildcardHost)
	if c := cookieNamed(st.jar, appURL, sessionName); c == nil {
		t.Fatalf("no %s cookie after the hand-off (Set-Cookie %q)", sessionName, res.Header.Values("Set-Cookie"))
	}
	if c := cookieNamed(st.jar, "http://"+echoHost+"/", sessionName); c == nil {
		t.Errorf("the subdomain session cookie must cover every app under the wildcard")
	}

	// 5. Now allowed: issued once, token cookie set, upstream sees the
	// token header and no Coder cookie, other cookies intact; a client's
	// own x-wsedge-app-token never arrives.
	u, _ := url.Parse(appURL)
	st.jar.SetCookies(u, []*http.Cookie{{Name: "theme", Value: "dark"}})
	calls := st.primary.IssueCalls()
	res, _ = st.get(t, appURL, http.Header{"X-Wsedge-App-Token": {"forged"}})
	echo := decodeEcho(t, res)
	if st.primary.IssueCalls() != calls+1 {
		t.Errorf("issue calls %d → %d, want one", calls, st.primary.IssueCalls())
	}
	tokCookie := cookieNamed(st.jar, appURL, tokens.SignedAppTokenCookie)
	if tokCookie == nil {
		t.Fatalf("no %s cookie set on allow (Set-Cookie %q)", tokens.SignedAppTokenCookie, res.Header.Values("Set-Cookie"))
	}
	if got := echo.Header.Get("X-Wsedge-App-Token"); got != tokCookie.Value {
		t.Errorf("upstream x-wsedge-app-token %q, want the issued token", got)
	}
	if strings.Join(echo.Cookies, ",") != "theme" {
		t.Errorf("upstream cookies %v, want only theme", echo.Cookies)
	}
	if echo.Host != codeHost || echo.Path != "/some/page?q=1" {
		t.Errorf("upstream got %s%s", echo.Host, echo.Path)
	}

	// 6. Warm cookie: allowed without asking the primary.
	calls = st.primary.IssueCalls()
	for range 5 {
		decodeEcho(t, must(st.get(t, appURL, nil)))
	}
	if st.primary.IssueCalls() != calls {
		t.Errorf("warm cookie caused %d issue calls", st.primary.IssueCalls()-calls)
	}

	// 7. The code app's token is not accepted for the echo app: a new one
	// is issued for it (the session cookie covers both).
	calls = st.primary.IssueCalls()
	echoRes := decodeEcho(t, must(st.get(t, "http://"+echoHost+"/", http.Header{"Cookie": {tokens.SignedAppTokenCookie + "=" + tokCookie.Value}})))
	if echoRes.Header.Get("X-Wsedge-App-Token") == tokCookie.Value || st.primary.IssueCalls() != calls+1 {
		t.Errorf("a token for another app was used (issue calls +%d)", st.primary.IssueCalls()-calls)
	}
}

func must(r result, err error) result {
	if err != nil {
		panic(err)
	}
	return r
}

// sessionCookie is the subdomain-app session cookie of a browser where
// user has logged in once.
func (st *edge) sessionCookie(t *testing.T, user string) *http.Cookie {
	t.Helper()
	key, err := st.primary.SessionToken(user)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: tokens.SubdomainAppSessionCookie(wildcardHost), Value: key}
}

func (st *edge) getWithCookies(t *testing.T, rawURL string, cookies ...*http.Cookie) result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	res, err := st.client.Transport.RoundTrip(req) // no jar
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return result{StatusCode: res.StatusCode, Header: res.Header, Body: string(b)}
}

// TestAuthzTokensThroughEnvoy: expired tokens are re-issued transparently,
// forged and alg-none tokens never allow, a burst of cookie-less requests
// costs one issue call, and a primary that goes away leaves valid cookies
// working while new sessions get a 502 page.
func TestAuthzTokensThroughEnvoy(t *testing.T) {
	az := &realAuthz{}
	st := startEdge(t, withRealAuthz(az), WithUpstream(http.HandlerFunc(echoUpstream)), WithJar())
	appURL := "http://" + codeHost + "/"
	session := st.sessionCookie(t, "alice")
	bob := st.sessionCookie(t, "bob")
	key, err := st.primary.SigningKey(tokens.FeatureAppToken)
	if err != nil {
		t.Fatal(err)
	}
	first := st.getWithCookies(t, appURL, session)
	tokenValue := setCookieValue(first.Header, tokens.SignedAppTokenCookie)
	if first.StatusCode != http.StatusOK || tokenValue == "" {
		t.Fatalf("session cookie: status %d, token cookie %q", first.StatusCode, tokenValue)
	}
	verified, err := (&tokens.Verifier{Keys: tokens.NewKeySet(key).Source(time.Now)}).VerifyToken(context.Background(), tokenValue)
	if err != nil {
		t.Fatalf("issued token does not verify with the primary's key: %v", err)
	}

	t.Run("expired token is re-issued transparently", func(t *testing.T) {
		old := verified
		old.Request.AppSlugOrPort = "echo"
		old.Expiry = time.Now().Add(-2 * time.Minute)
		expired, err := tokens.SignToken(key, old)
		if err != nil {
			t.Fatal(err)
		}
		// bob's first visit to the shared echo app, with a stale token:
		// a new one is issued without the browser noticing.
		calls := st.primary.IssueCalls()
		res := st.getWithCookies(t, "http://"+echoHost+"/", bob, &http.Cookie{Name: tokens.SignedAppTokenCookie, Value: expired})
		if res.StatusCode != http.StatusOK || st.primary.IssueCalls() != calls+1 {
			t.Fatalf("status %d, issue calls +%d; want 200 and one", res.StatusCode, st.primary.IssueCalls()-calls)
		}
		if fresh := setCookieValue(res.Header, tokens.SignedAppTokenCookie); fresh == "" || fresh == expired {
			t.Errorf("no fresh token cookie")
		}
	})

	t.Run("forged and alg none never allow", func(t *testing.T) {
		forgedKey, err := tokens.ParseKey(tokens.FeatureAppToken, strings.Repeat("ab", 64), key.Sequence, time.Now().Add(-time.Hour), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := tokens.SignToken(forgedKey, verified)
		parts := strings.Split(tokenValue, ".")
		algNone := "eyJhbGciOiJub25lIiwia2lkIjoiMSJ9." + parts[1] + "."
		for name, tok := range map[string]string{"forged": forged, "alg none": algNone} {
			res := st.getWithCookies(t, appURL, &http.Cookie{Name: tokens.SignedAppTokenCookie, Value: tok})
			if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Location"), "/api/v2/applications/auth-redirect") {
				t.Errorf("%s token without session: status %d Location %q, want the login redirect", name, res.StatusCode, res.Header.Get("Location"))
			}
		}
	})

	t.Run("burst of cookie-less requests costs one issue call", func(t *testing.T) {
		calls := st.primary.IssueCalls()
		const n = 100
		var wg sync.WaitGroup
		statuses := make(chan int, n)
		for range n {
			wg.Go(func() {
				statuses <- st.getWithCookies(t, "http://"+echoHost+"/burst", session).StatusCode
			})
		}
		wg.Wait()
		close(statuses)
		for s := range statuses {
			if s != http.StatusOK {
				t.Errorf("burst request: status %d", s)
			}
		}
		if got := st.primary.IssueCalls() - calls; got != 1 {
			t.Errorf("100 parallel cookie-less requests caused %d issue calls, want 1", got)
		}
	})

	t.Run("primary down", func(t *testing.T) {
		az.primary.ts.Close()
		res := st.getWithCookies(t, appURL, &http.Cookie{Name: tokens.SignedAppTokenCookie, Value: tokenValue})
		if res.StatusCode != http.StatusOK {
			t.Errorf("valid token cookie with the primary down: status %d, want 200", res.StatusCode)
		}
		res = st.getWithCookies(t, appURL, bob)
		if res.StatusCode != http.StatusBadGateway || !strings.Contains(res.Header.Get("Content-Type"), "text/html") {
			t.Errorf("new session with the primary down: status %d (%s), want a 502 page", res.StatusCode, res.Header.Get("Content-Type"))
		}
		if strings.Contains(res.Body, `"x-wsedge-app-token"`) {
			t.Errorf("the upstream answered a request that should have been refused")
		}
	})
}

func setCookieValue(h http.Header, name string) string {
	for _, line := range h.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err == nil && c.Name == name {
			return c.Value
		}
	}
	return ""
}
