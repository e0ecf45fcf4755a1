package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/wsedge/wsedge/tokens"
)

// demoAppMarker is in every hostileAnswer of the dev agent's demo app: its page
// title and its JSON echo field. A response carrying it reached the app.
func reachedApp(body string) bool {
	return strings.Contains(body, "wsedge demo app") || strings.Contains(body, `"x_forwarded_for"`)
}

// hostile is a client that sends exactly what it is given to the edge: no
// cookie jar, no redirects followed.
type hostile struct {
	t    *testing.T
	fp   *edge
	http *http.Client
}

func newHostile(t *testing.T, fp *edge) *hostile {
	return &hostile{t: t, fp: fp, http: fp.plainClient(t)}
}

// genuineToken asks for appURL with session in the Coder-Session-Token
// header, as a CLI would, and returns the signed app token authz sets in
// its cookie, and its claims (verified with appKey).
func (h *hostile) genuineToken(appURL, session string, appKey tokens.Key) (string, tokens.SignedToken) {
	h.t.Helper()
	warm := h.do("GET", appURL, http.Header{"Coder-Session-Token": {session}})
	genuine := setCookieValue(warm.header, tokens.SignedAppTokenCookie)
	if warm.status != http.StatusOK || genuine == "" {
		h.t.Fatalf("set-up: status %d, token %q", warm.status, genuine)
	}
	claims, err := (&tokens.Verifier{Keys: tokens.NewKeySet(appKey).Source(time.Now)}).VerifyToken(context.Background(), genuine)
	if err != nil {
		h.t.Fatal(err)
	}
	return genuine, claims
}

type hostileAnswer struct {
	status int
	header http.Header
	body   string
}

func (h *hostile) do(method, rawURL string, header http.Header) hostileAnswer {
	h.t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if host := header.Get("Host"); host != "" {
		req.Host = host
	}
	res, err := h.http.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return hostileAnswer{status: res.StatusCode, header: res.Header, body: string(b)}
}

// raw sends a hand-written HTTP/1.1 request to the edge and returns the
// status line.
func (h *hostile) raw(request string) string {
	h.t.Helper()
	c, err := h.fp.dial(context.Background(), "tcp", accessHost+":80")
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		h.t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, _ := io.ReadAtLeast(c, b, 12)
	line, _, _ := strings.Cut(string(b[:n]), "\r\n")
	return line
}

// rawResponse sends a hand-written HTTP/1.1 request to the edge and reads
// the whole response.
func (h *hostile) rawResponse(request string) (*http.Response, string) {
	h.t.Helper()
	c, err := h.fp.dial(context.Background(), "tcp", accessHost+":80")
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		h.t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res, string(b)
}

func cookieHeader(cs ...*http.Cookie) http.Header {
	var parts []string
	for _, c := range cs {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return http.Header{"Cookie": {strings.Join(parts, "; ")}}
}

// TestHostileInput sends forged tokens and keys, host and path tricks,
// open-redirect attempts, internal-header smuggling, oversized headers and
// upgrade abuse through real Envoy, authz, the dialer and the tailnet, and
// checks the exact outcome and that the app never answered when it must
// not.
func TestHostileInput(t *testing.T) {
	fp := startEdge(t, WithDev())
	h := newHostile(t, fp)
	appKey, err := fp.dev.Primary.SigningKey(tokens.FeatureAppToken)
	if err != nil {
		t.Fatal(err)
	}
	apiKey, err := fp.dev.Primary.SigningKey(tokens.FeatureAPIKey)
	if err != nil {
		t.Fatal(err)
	}
	session, _ := fp.dev.Primary.SessionToken("alice")
	codeURL := "http://" + codeHost + "/echo"

	// A genuine token for the code app, to tamper with.
	genuine, claims := h.genuineToken(codeURL, session, appKey)
	kid := fmt.Sprint(appKey.Sequence)
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(genuine, ".")[1])
	sign := func(alg jose.SignatureAlgorithm, key any) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		o, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := o.CompactSerialize()
		return c
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	expired := claims
	expired.Expiry = time.Now().Add(-3 * time.Minute)
	expiredTok, _ := tokens.SignToken(appKey, expired)
	crossApp := claims
	crossApp.Request.AppSlugOrPort = "echo"
	crossTok, _ := tokens.SignToken(appKey, crossApp)
	parts := strings.Split(genuine, ".")

	t.Run("tokens that must never allow", func(t *testing.T) {
		cases := map[string]string{
			"forged signature":               parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64)),
			"truncated":                      genuine[:len(genuine)/2],
			"alg none":                       base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"`+kid+`"}`)) + "." + parts[1] + ".",
			"HS256 with the key bytes":       sign(jose.HS256, appKey.Secret),
			"HS256 with the key as hex text": sign(jose.HS256, []byte(fmt.Sprintf("%x", appKey.Secret))),
			"RS256 (public-key confusion)":   sign(jose.RS256, rsaKey),
			"expired":                        expiredTok,
			"for another app":                crossTok,
			"garbage":                        "%00%ff" + strings.Repeat("A", 5000),
		}
		for name, tok := range cases {
			a := h.do("GET", codeURL, cookieHeader(&http.Cookie{Name: tokens.SignedAppTokenCookie, Value: tok}))
			if a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Location"), "/api/v2/applications/auth-redirect") || reachedApp(a.body) {
				t.Errorf("%s: status %d Location %q, want the login redirect and no app", name, a.status, a.header.Get("Location"))
			}
		}
		// Terminals take the token from the query; anonymous terminals are
		// refused by the primary with 404 JSON.
		pty := "http://" + accessHost + "/api/v2/workspaceagents/" + demoAgent.String() + "/pty?reconnect=" + demoAgent.String() + "&" + tokens.SignedAppTokenQueryParam + "="
		for name, tok := range map[string]string{"forged": cases["forged signature"], "alg none": cases["alg none"], "app token": genuine} {
			a := h.do("GET", pty+url.QueryEscape(tok), http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}})
			if a.status == http.StatusSwitchingProtocols || a.status < 400 {
				t.Errorf("terminal with a %s token: status %d, want a refusal", name, a.status)
			}
		}
	})

	t.Run("smuggled keys that must never become a cookie", func(t *testing.T) {
		encrypt := func(alg jose.KeyAlgorithm, key any, claims map[string]any) string {
			enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: alg, Key: key, KeyID: fmt.Sprint(apiKey.Sequence)}, (&jose.EncrypterOptions{Compression: jose.DEFLATE}).WithType("JWT"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(claims)
			o, err := enc.Encrypt(b)
			if err != nil {
				t.Fatal(err)
			}
			s, _ := o.CompactSerialize()
			return s
		}
		now := time.Now()
		good := map[string]any{"api_key": session, "iss": "coderd", "aud": []string{"wsproxy"}, "exp": now.Add(time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix()}
		with := func(k string, v any) map[string]any {
			m := map[string]any{}
			for a, b := range good {
				m[a] = b
			}
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
			return m
		}
		nested := any("x")
		for range 5000 {
			nested = []any{nested}
		}
		cases := map[string]string{
			"dir":                  encrypt(jose.DIRECT, apiKey.Secret, good),
			"A128GCMKW":            encrypt(jose.A128GCMKW, apiKey.Secret[:16], good),
			"RSA-OAEP":             encrypt(jose.RSA_OAEP, &rsaKey.PublicKey, good),
			"wrong aud":            encrypt(jose.A256GCMKW, apiKey.Secret, with("aud", []string{"coderd"})),
			"wrong iss":            encrypt(jose.A256GCMKW, apiKey.Secret, with("iss", "evil")),
			"no nbf":               encrypt(jose.A256GCMKW, apiKey.Secret, with("nbf", nil)),
			"expired":              encrypt(jose.A256GCMKW, apiKey.Secret, with("exp", now.Add(-time.Hour).Unix())),
			"deeply nested":        encrypt(jose.A256GCMKW, apiKey.Secret, with("api_key", nested)),
			"oversized":            strings.Repeat("a", 20000),
			"garbage":              "not.a.jwe.at.all",
			"signed token instead": genuine,
		}
		for name, key := range cases {
			a := h.do("GET", codeURL+"?"+tokens.SmuggledAPIKeyQueryParam+"="+url.QueryEscape(key), nil)
			if a.status != http.StatusBadRequest || a.header.Get("Set-Cookie") != "" || reachedApp(a.body) {
				t.Errorf("%s: status %d Set-Cookie %q, want Coder's 400 page and no cookie", name, a.status, a.header.Get("Set-Cookie"))
			} else if !strings.Contains(a.body, "Could not decrypt API key") {
				t.Errorf("%s: 400 without Coder's message: %.200s", name, a.body)
			}
		}
	})

	t.Run("open redirects through the key hand-off", func(t *testing.T) {
		key, err := tokens.EncryptAPIKey(apiKey, session, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"//evil.example/x", `/\evil.example/x`, "/%2F%2Fevil.example/x", "/%5Cevil.example", "/.//evil.example"} {
			a := h.do("GET", "http://"+codeHost+path+"?"+tokens.SmuggledAPIKeyQueryParam+"="+url.QueryEscape(key), nil)
			loc := a.header.Get("Location")
			u, err := url.Parse(loc)
			if a.status != http.StatusSeeOther || err != nil || u.Host != "" || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, `/\`) || !strings.HasPrefix(loc, "/") {
				t.Errorf("hand-off on %q: status %d Location %q, want a same-origin path", path, a.status, loc)
			}
		}
		// The trailing-slash redirect of path apps stays on the proxy.
		a := h.do("GET", "http://"+accessHost+"/@alice/dev.main/apps/code", http.Header{"Coder-Session-Token": {session}})
		if a.status != http.StatusTemporaryRedirect || a.header.Get("Location") != "/@alice/dev.main/apps/code/" {
			t.Errorf("path app without slash: status %d Location %q", a.status, a.header.Get("Location"))
		}
	})

	t.Run("hosts", func(t *testing.T) {
		cases := []struct {
			name, host string
			want       int
		}{
			{"upper case", strings.ToUpper(codeHost), http.StatusSeeOther},
			{"trailing dot", codeHost + ".", http.StatusSeeOther},
			{"with port", codeHost + ":80", http.StatusSeeOther},
			{"suffix of another domain", codeHost + ".evil.com", http.StatusMisdirectedRequest},
			{"wildcard without the dot", "code--main--dev--aliceapps.wsedge.test", http.StatusMisdirectedRequest},
			{"bare wildcard suffix", "apps.wsedge.test", http.StatusMisdirectedRequest},
			{"punycode label", "xn--80ak6aa92e.apps.wsedge.test", http.StatusBadRequest},
			{"IDN", "пример.apps.wsedge.test", http.StatusBadRequest},
		}
		for _, tt := range cases {
			a := h.do("GET", "http://"+accessHost+"/echo", http.Header{"Host": {tt.host}})
			if a.status != tt.want || reachedApp(a.body) {
				t.Errorf("%s (%q): status %d, want %d and no app", tt.name, tt.host, a.status, tt.want)
			}
		}
		// X-Forwarded-Host from an untrusted client does not pick the app.
		a := h.do("GET", "http://"+accessHost+"/echo", http.Header{"X-Forwarded-Host": {codeHost}, "Coder-Session-Token": {session}})
		if reachedApp(a.body) {
			t.Errorf("X-Forwarded-Host from a client opened the app (status %d)", a.status)
		}
	})

	t.Run("latency check on app hosts is the proxy's, not the app's", func(t *testing.T) {
		for _, host := range []string{accessHost, codeHost} {
			a := h.do("GET", "http://"+host+"/latency-check", nil)
			if a.status != http.StatusOK || a.body != "OK" || a.header.Get("Timing-Allow-Origin") != "*" || reachedApp(a.body) {
				t.Errorf("%s/latency-check: status %d body %.100q, want Coder's latency answer", host, a.status, a.body)
			}
		}
	})

	t.Run("paths", func(t *testing.T) {
		auth := http.Header{"Coder-Session-Token": {session}}
		for _, tt := range []struct {
			name, path string
			app        bool // the app may hostileAnswer (a legitimate spelling)
		}{
			{"%40 spelling", "/%40alice/dev.main/apps/code/echo", true},
			{"double-encoded @", "/%2540alice/dev.main/apps/code/echo", false},
			{"dot-dot out of the app", "/@alice/dev.main/apps/code/../../../../api/v2/buildinfo", true},
			{"@me", "/@me/dev.main/apps/code/", false},
			{"empty segment", "/@alice//apps/code/", false},
			{"overlong", "/@alice/dev.main/apps/code/" + strings.Repeat("a", 64<<10), false},
		} {
			a := h.do("GET", "http://"+accessHost+tt.path, auth)
			if !tt.app && reachedApp(a.body) {
				t.Errorf("%s: reached the app (status %d)", tt.name, a.status)
			}
			if a.status >= 500 && a.status != http.StatusBadGateway {
				t.Errorf("%s: status %d", tt.name, a.status)
			}
		}
		// Bytes Go would escape next to %2F: the app gets the request
		// target byte for byte, on the app authz approved.
		for _, tt := range []struct{ host, target string }{
			{codeHost, "/x%2Fy\"{|^`/z?format=json"},
			{accessHost, "/@alice/dev.main/apps/code/a%2Fb\"{|^`c/d?format=json"},
		} {
			res, body := h.rawResponse("GET " + tt.target + " HTTP/1.1\r\nHost: " + tt.host + "\r\nCoder-Session-Token: " + session + "\r\nConnection: close\r\n\r\n")
			var got struct {
				RequestURI string `json:"request_uri"`
			}
			if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
				t.Errorf("%s%s: status %d, want the app's echo: %.300s", tt.host, tt.target, res.StatusCode, body)
				continue
			}
			want := tt.target
			if tt.host == accessHost {
				want = strings.TrimPrefix(want, "/@alice/dev.main/apps/code")
			}
			if got.RequestURI != want {
				t.Errorf("%s%s: the app got %q, want %q", tt.host, tt.target, got.RequestURI, want)
			}
		}
		if line := h.raw("GET /@alice/dev.main/apps/code/\x00x HTTP/1.1\r\nHost: " + accessHost + "\r\n\r\n"); !strings.Contains(line, " 400 ") {
			t.Errorf("NUL in the path: %q, want 400", line)
		}
	})

	t.Run("internal and visitor identity headers never reach authz's decision or the app", func(t *testing.T) {
		a := h.do("GET", codeURL+"?format=json", http.Header{
			"Coder-Session-Token": {session},
			"X-Wsedge-App-Token":  {genuine, "forged"},
			"X-WSEDGE-Anything":   {"1"},
			// Coder's visitor identity headers, forged by the client.
			"X-Coder-User-Id":    {"00000000-0000-0000-0000-000000000001"},
			"x-coder-username":   {"admin"},
			"X-CODER-USER-EMAIL": {"admin@example.com"},
		})
		r := devAppEcho(t, a)
		for k := range r.Headers {
			switch lk := strings.ToLower(k); {
			case strings.HasPrefix(lk, "x-wsedge-"):
				t.Errorf("the app received internal header %s", k)
			case lk == "x-coder-user-id" || lk == "x-coder-username" || lk == "x-coder-user-email":
				t.Errorf("the app received the client's forged visitor identity header %s: %q", k, r.Headers[k])
			}
		}
		// Underscore spellings of the same headers: servers that fold '_'
		// into '-' (uWSGI; Puma before 6.4.3/5.6.9) would read them as the
		// real ones. The edge drops them, and the dialer would too.
		a = h.do("GET", codeURL+"?format=json", http.Header{
			"Coder-Session-Token": {session},
			"X_Coder_User_Id":     {"00000000-0000-0000-0000-000000000001"},
			"x_coder_username":    {"admin"},
			"X_CODER_USER_EMAIL":  {"admin@example.com"},
			"X_Forwarded_For":     {"6.6.6.6"},
			"X_Forwarded_Host":    {"evil.example"},
			"X_Wsedge_App_Token":  {genuine},
		})
		r = devAppEcho(t, a)
		for k, v := range r.Headers {
			if strings.Contains(k, "_") {
				t.Errorf("the app received underscore header %s: %q", k, v)
			}
		}
		if xff := strings.Join(r.Headers["X-Forwarded-For"], ","); strings.Contains(xff, "6.6.6.6") {
			t.Errorf("X-Forwarded-For %q carries the client's underscore spelling", xff)
		}
		// Without a session, a client-sent app token header is no token.
		a = h.do("GET", codeURL, http.Header{"X-Wsedge-App-Token": {genuine}})
		if a.status != http.StatusSeeOther || reachedApp(a.body) {
			t.Errorf("x-wsedge-app-token from the client: status %d, want the login redirect", a.status)
		}
		// An obs-folded line is part of the previous header's value (Envoy
		// unfolds it), never a header of its own: refused or sent to login.
		if line := h.raw("GET /echo HTTP/1.1\r\nHost: " + codeHost + "\r\nX-Foo: a\r\n x-wsedge-app-token: " + genuine + "\r\n\r\n"); !strings.Contains(line, " 400 ") && !strings.Contains(line, " 303 ") {
			t.Errorf("obs-fold header: %q, want 400 or the login redirect", line)
		}
	})

	t.Run("oversized and too many cookies", func(t *testing.T) {
		big := h.do("GET", codeURL, http.Header{"Cookie": {"a=" + strings.Repeat("x", 100<<10)}})
		if big.status != http.StatusRequestHeaderFieldsTooLarge || reachedApp(big.body) {
			t.Errorf("100 KiB cookie: status %d, want 431", big.status)
		}
		var many []string
		for i := range 3000 {
			many = append(many, fmt.Sprintf("c%d=v", i))
		}
		a := h.do("GET", codeURL, http.Header{"Cookie": {strings.Join(many, "; ")}})
		if reachedApp(a.body) || (a.status != http.StatusSeeOther && a.status != http.StatusRequestHeaderFieldsTooLarge) {
			t.Errorf("3000 cookies: status %d, want the login redirect or 431", a.status)
		}
	})

	t.Run("upgrade abuse", func(t *testing.T) {
		ws := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
		if a := h.do("GET", "http://"+accessHost+"/healthz", ws); a.status == http.StatusSwitchingProtocols {
			t.Errorf("websocket upgrade on /healthz was accepted")
		}
		derpUp := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"DERP"}, "Coder-Session-Token": {session}}
		if a := h.do("GET", codeURL, derpUp); a.status == http.StatusSwitchingProtocols || reachedApp(a.body) && a.status != http.StatusOK {
			t.Errorf("Upgrade: DERP on an app route: status %d", a.status)
		}
		if a := h.do("GET", "http://"+accessHost+"/api/v2/buildinfo", derpUp); a.status == http.StatusSwitchingProtocols {
			t.Errorf("Upgrade: DERP outside /derp was accepted")
		}
	})
}

// devAppEcho decodes the demo app's JSON echo.
func devAppEcho(t *testing.T, a hostileAnswer) struct{ Headers map[string][]string } {
	t.Helper()
	var r struct {
		Headers map[string][]string `json:"headers"`
	}
	if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &r) != nil {
		t.Fatalf("status %d, not the app's echo: %.300s", a.status, a.body)
	}
	return struct{ Headers map[string][]string }{r.Headers}
}
