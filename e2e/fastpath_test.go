package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/tokens"
)

// fastKeyRefresh makes authz and the dialer refresh the primary's keys
// far below Envoy's 5 s JWKS cache: a withdrawn key is gone from the
// services while Envoy may still verify with it. The fast path tests run
// the dev deployment (fast path on, as shipped) with it and WithMetrics.
func fastKeyRefresh(c *devstack.DevConfig) { c.KeyRefresh = 100 * time.Millisecond }

// counter sums a counter family, over the label value given (empty:
// every series).
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					match = true
				}
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// authzChecks is how many checks authz has answered with outcome (every
// outcome if empty), from its metrics (WithMetrics).
func (h *edge) authzChecks(t *testing.T, outcome string) float64 {
	t.Helper()
	label := "outcome"
	if outcome == "" {
		label = ""
	}
	return counter(t, h.authzMetrics, "wsedge_authz_checks_total", label, outcome)
}

// browserWith is a browser with its own cookie jar holding cookies for
// the proxy host; it follows redirects on the proxy and stops at the
// dashboard.
func (h *edge) browserWith(t *testing.T, u *url.URL, cookies ...*http.Cookie) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(u, cookies)
	tr := &http.Transport{DialContext: h.dial}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host == dashboardHost || len(via) > 5 {
				return http.ErrUseLastResponse
			}
			return nil
		}}
}

// signedLike re-signs the claims of a real token after edit, with key.
func signedLike(t *testing.T, key tokens.Key, base tokens.SignedToken, edit func(*tokens.SignedToken)) string {
	t.Helper()
	tok := base
	edit(&tok)
	s, err := tokens.SignToken(key, tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFastPath checks Envoy's fast path through real Envoy: a warm request
// (a browser holding a valid token cookie) reaches the app without authz
// being asked and without Coder cookies; every token Envoy or the dialer
// must not trust meets ext_authz and is answered exactly as a request
// without any token is (the login redirect); a smuggled key never rides
// the fast path.
func TestFastPath(t *testing.T) {
	e := startEdge(t, WithDev(fastKeyRefresh), WithMetrics())
	appURL := "http://" + accessHost + "/@alice/dev.main/apps/code/echo?x=1"
	r := received(t, e.login(t, appURL))
	if r.Path != "/echo" {
		t.Fatalf("login hand-off ended at %s", r.Path)
	}
	u, _ := url.Parse(appURL)
	var session, token *http.Cookie
	for _, c := range e.browser.Jar.Cookies(u) {
		switch c.Name {
		case tokens.SignedAppTokenCookie:
			token = c
		case tokens.PathAppSessionCookie:
			session = c
		}
	}
	if token == nil || session == nil {
		t.Fatalf("after login the browser holds %v", e.browser.Jar.Cookies(u))
	}
	key, err := e.dev.Primary.SigningKey(tokens.FeatureAppToken)
	if err != nil {
		t.Fatal(err)
	}
	real, err := (&tokens.Verifier{Keys: tokens.NewKeySet(key).Source(time.Now)}).VerifyToken(context.Background(), token.Value)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("warm requests never reach authz", func(t *testing.T) {
		before, served := e.authzChecks(t, ""), counter(t, e.dialerMetrics, "wsedge_dialer_fast_path_total", "result", "served")
		for i := range 5 {
			res, err := e.browser.Get(appURL)
			if err != nil {
				t.Fatal(err)
			}
			r := received(t, res)
			for _, c := range r.CookieNames {
				if tokens.IsCoderCookie(c) || c == "wsedge_cold_path" {
					t.Errorf("request %d: the app received cookie %s", i, c)
				}
			}
			if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Vary") == "" {
				t.Errorf("request %d: response policy missing: nosniff %q Vary %q", i, res.Header.Get("X-Content-Type-Options"), res.Header.Get("Vary"))
			}
		}
		if got := e.authzChecks(t, "") - before; got != 0 {
			t.Errorf("authz was asked %v times for 5 warm requests", got)
		}
		if got := counter(t, e.dialerMetrics, "wsedge_dialer_fast_path_total", "result", "served") - served; got != 5 {
			t.Errorf("dialer served %v requests by the fast path, want 5", got)
		}
	})

	t.Run("warm requests with bodies reach the app whole", func(t *testing.T) {
		// Uploads of each framing, between GETs on the browser's kept
		// connection: each body arrives whole (the dialer reads bodies
		// on the connection Envoy keeps to it) and none meets authz.
		before := e.authzChecks(t, "")
		sizes := []int{0, 5, 300 << 10, 64 << 10}
		for i, n := range sizes {
			var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("b"), n))
			if i%2 == 1 {
				body = io.MultiReader(body) // no length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPut, appURL, body)
			r := received(t, mustDo(t, e.browser, req))
			if r.Method != http.MethodPut || r.BodyBytes != int64(n) {
				t.Errorf("upload %d: the app saw %s with %d bytes, want PUT with %d", i, r.Method, r.BodyBytes, n)
			}
			get, _ := http.NewRequest(http.MethodGet, appURL, nil)
			if r := received(t, mustDo(t, e.browser, get)); r.Method != http.MethodGet || r.BodyBytes != 0 {
				t.Errorf("the GET after upload %d: the app saw %s with %d bytes", i, r.Method, r.BodyBytes)
			}
		}
		if got := e.authzChecks(t, "") - before; got != 0 {
			t.Errorf("authz was asked %v times for warm requests with bodies", got)
		}
	})

	t.Run("a client's copy of authz's token header never reaches the dialer", func(t *testing.T) {
		// The warm route removes it (Envoy's header filter is off there):
		// were it forwarded, the dialer would read it instead of the
		// cookie and refuse the request.
		req, _ := http.NewRequest(http.MethodGet, appURL, nil)
		req.Header.Set("X-Wsedge-App-Token", "bogus")
		res := mustDo(t, e.browser, req)
		if r := received(t, res); r.Path != "/echo" {
			t.Fatalf("status %d, app saw %q", res.StatusCode, r.Path)
		}
	})

	// The answer to a request without any token and without a session:
	// ext_authz sends the browser to the dashboard's login.
	cold := func(t *testing.T, c *http.Client, req *http.Request) (*http.Response, float64) {
		t.Helper()
		before := e.authzChecks(t, "")
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if strings.Contains(body, `"raw_query"`) {
			t.Errorf("%s reached the app: %s", req.URL, body)
		}
		return res, e.authzChecks(t, "") - before
	}
	noToken, _ := http.NewRequest(http.MethodGet, appURL, nil)
	baseline, n := cold(t, e.browserWith(t, u), noToken)
	if baseline.StatusCode/100 != 3 || !strings.Contains(baseline.Header.Get("Location"), dashboardHost) || n != 1 {
		t.Fatalf("no token: status %d Location %q, %v checks", baseline.StatusCode, baseline.Header.Get("Location"), n)
	}
	otherKey := key
	otherKey.Secret = append([]byte(nil), key.Secret...)
	otherKey.Secret[0] ^= 0xff
	unknownKey := otherKey
	unknownKey.Sequence = key.Sequence + 100
	otherApp := real.Request
	otherApp.AppSlugOrPort = "other"
	for _, tt := range []struct {
		name  string
		token string
		// dialer is the dialer's fast-path result: Envoy's warm route
		// sends every request with a token cookie and no Origin to the
		// dialer, which refuses these and asks authz (one Check, the
		// cold path's answer).
		dialer string
	}{
		{"expired", signedLike(t, key, real, func(s *tokens.SignedToken) { s.Expiry = time.Now().Add(-3 * time.Minute) }), "expired"},
		{"forged", signedLike(t, otherKey, real, func(*tokens.SignedToken) {}), "invalid"},
		{"unknown kid", signedLike(t, unknownKey, real, func(*tokens.SignedToken) {}), "invalid"},
		{"another app's token", signedLike(t, key, real, func(s *tokens.SignedToken) { s.Request = otherApp }), "mismatch"},
		{"not a cookie value Go reads", `"unterminated`, "missing"},
		{"empty", "", "missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fastPath := func() float64 {
				return counter(t, e.dialerMetrics, "wsedge_dialer_fast_path_total", "result", tt.dialer)
			}
			dialerBefore := fastPath()
			req, _ := http.NewRequest(http.MethodGet, appURL, nil)
			req.Header.Set("Cookie", tokens.SignedAppTokenCookie+"="+tt.token)
			res, n := cold(t, e.browserWith(t, u), req)
			if got := fastPath() - dialerBefore; got != 1 {
				t.Errorf("dialer refused %v fast-path requests as %q, want 1", got, tt.dialer)
			}
			if res.StatusCode != baseline.StatusCode || res.Header.Get("Location") != baseline.Header.Get("Location") {
				t.Errorf("status %d Location %q, want %d %q as without a token", res.StatusCode, res.Header.Get("Location"), baseline.StatusCode, baseline.Header.Get("Location"))
			}
			if n != 1 {
				t.Errorf("authz asked %v times, want once (the cold path)", n)
			}
		})
	}

	t.Run("with Origin Envoy verifies and ext_authz decides", func(t *testing.T) {
		// Requests with Origin take the app route: jwt_authn verifies
		// the cookie (the app-policy ext_proc reads its claims) and a
		// cookie that fails meets ext_authz in Envoy, never the dialer.
		dialerBefore := counter(t, e.dialerMetrics, "wsedge_dialer_fast_path_total", "", "")
		req, _ := http.NewRequest(http.MethodGet, appURL, nil)
		req.Header.Set("Cookie", tokens.SignedAppTokenCookie+"="+signedLike(t, otherKey, real, func(*tokens.SignedToken) {}))
		req.Header.Set("Origin", "http://"+accessHost)
		res, n := cold(t, e.browserWith(t, u), req)
		if res.StatusCode != baseline.StatusCode || n != 1 {
			t.Errorf("forged token with Origin: status %d, %v checks; want %d and one check", res.StatusCode, n, baseline.StatusCode)
		}
		if got := counter(t, e.dialerMetrics, "wsedge_dialer_fast_path_total", "", "") - dialerBefore; got != 0 {
			t.Errorf("the dialer saw %v fast-path requests, want none", got)
		}
		before := e.authzChecks(t, "")
		req, _ = http.NewRequest(http.MethodGet, appURL, nil)
		req.Header.Set("Cookie", token.String())
		req.Header.Set("Origin", "http://"+accessHost)
		if r := received(t, mustDo(t, e.browserWith(t, u), req)); r.Path != "/echo" {
			t.Fatalf("valid token with Origin: app saw %s", r.Path)
		}
		if got := e.authzChecks(t, "") - before; got != 0 {
			t.Errorf("valid token with Origin: authz asked %v times, want none (jwt_authn verified it)", got)
		}
	})

	t.Run("smuggled key never rides the fast path", func(t *testing.T) {
		// A valid token and a bad smuggled key: authz handles the key
		// hand-off (Coder's 400 page), and the app never sees it.
		for _, q := range []string{"coder_application_connect_api_key_35e783=bogus", "coder%5Fapplication_connect_api_key_35e783=bogus"} {
			before := e.authzChecks(t, "")
			res, err := e.browser.Get("http://" + accessHost + "/@alice/dev.main/apps/code/echo?" + q)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, res)
			if res.StatusCode != http.StatusBadRequest || strings.Contains(body, "bogus") {
				t.Errorf("%s: status %d body %.200s", q, res.StatusCode, body)
			}
			if e.authzChecks(t, "")-before != 1 {
				t.Errorf("%s: authz not asked", q)
			}
		}
	})

	t.Run("a session with a stale token goes cold and comes back warm", func(t *testing.T) {
		// Another app's token in the cookie and a valid session: the
		// dialer asks authz, which issues a fresh token (one Check, the
		// app served), and the next request is warm again.
		c := e.browserWith(t, u, session, &http.Cookie{Name: tokens.SignedAppTokenCookie, Value: signedLike(t, key, real, func(s *tokens.SignedToken) { s.Request = otherApp }), Path: real.Request.BasePath})
		before := e.authzChecks(t, "")
		res, err := c.Get(appURL)
		if err != nil {
			t.Fatal(err)
		}
		if r := received(t, res); r.Path != "/echo" {
			t.Fatalf("app saw %s", r.Path)
		}
		if e.authzChecks(t, "")-before != 1 {
			t.Errorf("authz asked %v times, want once", e.authzChecks(t, "")-before)
		}
		before = e.authzChecks(t, "")
		if r := received(t, mustGet(t, c, appURL)); r.Path != "/echo" {
			t.Fatalf("app saw %s", r.Path)
		}
		if e.authzChecks(t, "")-before != 0 {
			t.Errorf("authz asked again after a fresh token was issued")
		}
	})
}

// TestFastPathWithdrawnKey: a key the primary withdraws stops its tokens
// at once on the fast path — while Envoy's JWKS (cached 5 s) still lists
// it, the dialer, which verifies with the keys it holds, refuses the token
// and the browser gets the cold path's answer; the app is never reached.
func TestFastPathWithdrawnKey(t *testing.T) {
	e := startEdge(t, WithDev(fastKeyRefresh), WithMetrics())
	appURL := "http://" + accessHost + "/@alice/dev.main/apps/code/echo"
	u, _ := url.Parse(appURL)
	received(t, e.login(t, appURL))
	var tokenCookie *http.Cookie
	for _, c := range e.browser.Jar.Cookies(u) {
		if c.Name == tokens.SignedAppTokenCookie {
			tokenCookie = c
		}
	}
	key, err := e.dev.Primary.SigningKey(tokens.FeatureAppToken)
	if err != nil || tokenCookie == nil {
		t.Fatalf("key %v, token cookie %v", err, tokenCookie)
	}
	real, err := (&tokens.Verifier{Keys: tokens.NewKeySet(key).Source(time.Now)}).VerifyToken(context.Background(), tokenCookie.Value)
	if err != nil {
		t.Fatal(err)
	}
	baseline, _ := e.browserWith(t, u).Get(appURL)
	readAll(t, baseline)

	for attempt := 1; ; attempt++ {
		// A fresh key signs; its token is warm (Envoy learns the key
		// within its JWKS cache period).
		if err := e.dev.Primary.RotateKeys(); err != nil {
			t.Fatal(err)
		}
		key, err := e.dev.Primary.SigningKey(tokens.FeatureAppToken)
		if err != nil {
			t.Fatal(err)
		}
		tok := signedLike(t, key, real, func(s *tokens.SignedToken) { s.Expiry = time.Now().Add(time.Minute) })
		c := e.browserWith(t, u, &http.Cookie{Name: tokens.SignedAppTokenCookie, Value: tok, Path: "/"})
		deadline := time.Now().Add(15 * time.Second)
		for {
			before := e.authzChecks(t, "")
			res := mustGet(t, c, appURL)
			body := readAll(t, res)
			if res.StatusCode == http.StatusOK && strings.Contains(body, `"raw_query"`) && e.authzChecks(t, "") == before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a token of the new key never took the warm path: %d", res.StatusCode)
			}
			time.Sleep(200 * time.Millisecond)
		}

		if err := e.dev.Primary.WithdrawKey(tokens.FeatureAppToken, key.Sequence); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // authz and the dialer refresh every 100 ms
		refused := counter(t, e.dialerMetrics, "wsedge_dialer_fast_path_total", "result", "invalid")
		res := mustGet(t, c, appURL)
		body := readAll(t, res)
		if strings.Contains(body, `"raw_query"`) {
			t.Fatalf("a token of a withdrawn key reached the app (%d)", res.StatusCode)
		}
		if res.StatusCode != baseline.StatusCode || res.Header.Get("Location") != baseline.Header.Get("Location") {
			t.Errorf("withdrawn key: %d %q, want the no-token answer %d %q", res.StatusCode, res.Header.Get("Location"), baseline.StatusCode, baseline.Header.Get("Location"))
		}
		if counter(t, e.dialerMetrics, "wsedge_dialer_fast_path_total", "result", "invalid") > refused {
			return // Envoy still verified it; the dialer refused it
		}
		// Envoy's JWKS refresh happened to fall in the 500 ms window:
		// Envoy itself sent it to ext_authz. Try again with a new key.
		if attempt == 3 {
			t.Fatal("Envoy dropped the withdrawn key before the dialer three times in a row")
		}
		t.Logf("attempt %d: Envoy refreshed its JWKS first; again", attempt)
	}
}

func mustGet(t *testing.T, c *http.Client, rawURL string) *http.Response {
	t.Helper()
	res, err := c.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func mustDo(t *testing.T, c *http.Client, req *http.Request) *http.Response {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestSameOriginSkipsExtProc checks, through real Envoy with the dev stack
// (fast path on, as shipped), that a page calling its own app — an Origin
// that is the app's own origin: its POSTs, its websockets — is answered
// without an ext_proc round trip: the dialer applies the response policy
// and allows the app's own origin, as ext_proc would. A cross-origin
// request still meets ext_proc, which decides it with the owner lookup.
func TestSameOriginSkipsExtProc(t *testing.T) {
	e := startEdge(t, WithDev(logEveryRequest), WithMetrics(), WithWarmCookies())
	messages := func() float64 {
		return counter(t, e.authzMetrics, "wsedge_extproc_messages_total", "", "")
	}
	c := e.httpClient(1)
	// sendFrom sends what a page's fetch sends; site, if set, is the
	// browser's Sec-Fetch-Site.
	sendFrom := func(method, origin, site string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+codeHost+"/cors", strings.NewReader("x=1"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Cookie", e.codeCookie)
		req.Header.Set("Origin", origin)
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
			req.Header.Set("Sec-Fetch-Mode", "cors")
		}
		res := mustDo(t, c, req)
		if body := readAll(t, res); res.StatusCode != http.StatusOK || body != "cors\n" {
			t.Fatalf("%s with Origin %s: status %d body %q", method, origin, res.StatusCode, body)
		}
		return res
	}
	send := func(method, origin string) *http.Response { t.Helper(); return sendFrom(method, origin, "") }
	// What coderd's CORS handler sends for an allowed origin: the origin
	// echoed with credentials, Vary: Origin first, the app's own CORS
	// headers gone.
	allowed := func(t *testing.T, res *http.Response, origin string) {
		t.Helper()
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != origin {
			t.Errorf("Access-Control-Allow-Origin %q, want %q", got, origin)
		}
		if got := res.Header.Get("Access-Control-Allow-Credentials"); got != "true" {
			t.Errorf("Access-Control-Allow-Credentials %q", got)
		}
		if got := res.Header.Get("Access-Control-Allow-Methods"); got != "" {
			t.Errorf("the app's Access-Control-Allow-Methods %q reached the browser", got)
		}
		if got := varyValues(res.Header); !slices.Equal(got, []string{"Origin", "Accept-Encoding"}) {
			t.Errorf("Vary %q", got)
		}
	}
	own := "http://" + codeHost
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method+" from the app's own origin", func(t *testing.T) {
			before := messages()
			allowed(t, send(method, own), own)
			if got := messages() - before; got != 0 {
				t.Errorf("ext_proc handled %v messages for a same-origin %s", got, method)
			}
		})
	}
	// websocketFrom opens a websocket to the app with hdr besides the
	// cookie, checks the 101's allowance (wantACAO) and one echo, that no
	// ext_proc message was spent on it, and the route it took.
	websocketFrom := func(t *testing.T, hdr http.Header, wantACAO, wantRoute string) {
		t.Helper()
		before := messages()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		hdr.Set("Cookie", e.codeCookie)
		ws, res, err := e.dialWebsocket(ctx, "ws://"+codeHost+"/ws", hdr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer ws.CloseNow()
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != wantACAO {
			t.Errorf("101 Access-Control-Allow-Origin %q, want %q", got, wantACAO)
		}
		if err := echoOnce(ctx, ws, "hello"); err != nil {
			t.Fatal(err)
		}
		if got := messages() - before; got != 0 {
			t.Errorf("ext_proc handled %v messages for a websocket", got)
		}
		_ = ws.Close(websocket.StatusNormalClosure, "") // Envoy logs it when it ends
		if got := accessLogRoute(t, e, res.Header.Get("X-Coder-Request-Id")); got != wantRoute {
			t.Errorf("route %q, want %s", got, wantRoute)
		}
	}
	// Chromium sends no Sec-Fetch-* on websockets: its own-origin
	// websocket takes the websocket twin, the 101 allowing its origin as
	// ext_proc would.
	t.Run("websocket from the app's own origin", func(t *testing.T) {
		websocketFrom(t, http.Header{"Origin": {own}}, own, "subdomain-app-warm-websocket")
	})
	// Every websocket handshake is warm: a browser reads no CORS header
	// of a 101. The dialer allows only the page's own origin.
	t.Run("a cross-origin websocket takes the warm route without an allowance", func(t *testing.T) {
		websocketFrom(t, http.Header{"Origin": {"http://" + echoHost}}, "", "subdomain-app-warm-websocket")
	})
	t.Run("another app of the same owner meets ext_proc", func(t *testing.T) {
		before := messages()
		other := "http://" + echoHost
		allowed(t, send(http.MethodGet, other), other)
		if got := messages() - before; got == 0 {
			t.Error("a cross-origin request skipped ext_proc")
		}
	})
	// A browser marks its page's own requests Sec-Fetch-Site:
	// same-origin: those take the warm route (no jwt_authn, no ext_proc);
	// the dialer's answer is the same.
	t.Run("a browser's same-origin POST takes the warm route", func(t *testing.T) {
		before := messages()
		res := sendFrom(http.MethodPost, own, "same-origin")
		allowed(t, res, own)
		if got := messages() - before; got != 0 {
			t.Errorf("ext_proc handled %v messages", got)
		}
		if got := accessLogRoute(t, e, res.Header.Get("X-Coder-Request-Id")); got != "subdomain-app-warm-same-origin" {
			t.Errorf("route %q, want subdomain-app-warm-same-origin", got)
		}
	})
	t.Run("a forged Sec-Fetch-Site wins no CORS allowance", func(t *testing.T) {
		res := sendFrom(http.MethodPost, "https://evil.example", "same-origin")
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Access-Control-Allow-Origin %q for a foreign origin", got)
		}
		if got := res.Header.Get("Access-Control-Allow-Methods"); got != "" {
			t.Errorf("the app's Access-Control-Allow-Methods %q reached the client", got)
		}
		if got := accessLogRoute(t, e, res.Header.Get("X-Coder-Request-Id")); got != "subdomain-app-warm-same-origin" {
			t.Errorf("route %q, want subdomain-app-warm-same-origin", got)
		}
	})
	t.Run("a cross-site request stays on the app route", func(t *testing.T) {
		before := messages()
		other := "http://" + echoHost
		res := sendFrom(http.MethodPost, other, "same-site")
		allowed(t, res, other)
		if got := messages() - before; got == 0 {
			t.Error("a cross-origin request skipped ext_proc")
		}
		if got := accessLogRoute(t, e, res.Header.Get("X-Coder-Request-Id")); got != "subdomain-app" {
			t.Errorf("route %q, want subdomain-app", got)
		}
	})
	t.Run("a browser's same-origin websocket takes the warm route", func(t *testing.T) {
		websocketFrom(t, http.Header{"Origin": {own}, "Sec-Fetch-Site": {"same-origin"}, "Sec-Fetch-Mode": {"websocket"}},
			own, "subdomain-app-warm-same-origin")
	})
	// Origins that are not byte for byte the request's own meet ext_proc
	// (Envoy's matcher spells the comparison by prefix, suffix and
	// length), which allows those naming the same app (another scheme or
	// port: the owner lookup reads the host) and refuses the others.
	for _, tt := range []struct {
		origin  string
		allowed bool
	}{
		{"https://evil.example", false},
		{"https://" + codeHost, true},
		{"http://" + codeHost + ":8443", true},
		{"http://x" + codeHost, false},
		{"http://" + codeHost + ".evil.example", false},
		{"http:/x" + codeHost, false}, // the same length as the own origin
		{"null", false},
	} {
		t.Run("origin "+tt.origin+" meets ext_proc", func(t *testing.T) {
			before := messages()
			res := send(http.MethodGet, tt.origin)
			if got := messages() - before; got == 0 {
				t.Error("a request that is not same-origin skipped ext_proc")
			}
			want := ""
			if tt.allowed {
				want = tt.origin
			}
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != want {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, want)
			}
		})
	}
}

// accessLogRoute is the route of the request with this ID in Envoy's
// access log (a request is logged when it ends: a websocket once closed).
func accessLogRoute(t *testing.T, e *edge, id string) string {
	t.Helper()
	if id == "" {
		t.Fatal("no X-Coder-Request-Id on the response")
	}
	route, _ := e.accessLogLine(t, "the access log line of request "+id, func(m map[string]any) bool { return m["request_id"] == id })["route"].(string)
	return route
}

// accessLogLine waits for the first line of Envoy's JSON access log that
// match accepts and returns it.
func (h *edge) accessLogLine(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	return accessLogLineIn(t, h.dev.Envoy.StdoutPath(), what, match)
}

// accessLogLineIn is accessLogLine for the access log written to path.
func accessLogLineIn(t *testing.T, path, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var line map[string]any
	waitFor(t, 15*time.Second, what, func() (bool, string) {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && match(m) {
				line = m
				return true, ""
			}
		}
		return false, string(b)
	})
	return line
}
