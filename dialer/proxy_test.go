package dialer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
)

// countingApp is an app that counts hits and echoes what it saw.
func countingApp(t *testing.T, hits *atomic.Int32) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-App-Path", r.URL.EscapedPath())
		w.Header().Set("X-App-Query", r.URL.RawQuery)
		w.Header().Set("X-App-Host", r.Host)
		_, _ = io.WriteString(w, "hello from app")
	}))
	t.Cleanup(app.Close)
	return app
}

func appPort(t testing.TB, srv *httptest.Server) uint16 {
	t.Helper()
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var n uint16
	for _, c := range p {
		n = n*10 + uint16(c-'0')
	}
	return n
}

func TestAppTokenRefused(t *testing.T) {
	e := newEnv(t, nil).start()
	var hits atomic.Int32
	app := countingApp(t, &hits)
	e.agents.set(8080, app.Listener.Addr().String())
	good := pathAppRequest("code")
	appURL := "http://127.0.0.1:8080"
	other := randomKey(t, 7) // same kid, different secret
	otherUser := good
	otherUser.UsernameOrID = "bob"
	cases := []struct {
		name  string
		token string
	}{
		{"missing", ""},
		{"garbage", "not-a-jws"},
		{"forged", e.tokenWith(other, good, appURL, time.Now().Add(time.Minute))},
		{"expired", e.tokenWith(e.key, good, appURL, time.Now().Add(-3*time.Minute))},
		{"other app", e.token(pathAppRequest("other"), appURL)},
		{"other user", e.token(otherUser, appURL)},
		{"terminal token on app", e.token(terminalRequest(testAgentID), "")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", c.token, nil)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %s", resp.StatusCode, body)
			}
			var r coderhttp.Response
			if err := json.Unmarshal(body, &r); err != nil || r.Message == "" {
				t.Fatalf("body %q is not a JSON error: %v", body, err)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("app was reached %d times with refused tokens", n)
	}
	if d := e.agents.dialed(); len(d) != 0 {
		t.Fatalf("agent dialled with refused tokens: %v", d)
	}
	// The same request with a good token goes through.
	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", e.token(good, appURL), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || hits.Load() != 1 {
		t.Fatalf("good token: status %d, hits %d", resp.StatusCode, hits.Load())
	}
}

func TestAppPortBelowMinimum(t *testing.T) {
	e := newEnv(t, nil).start()
	for _, port := range []string{"8", "1", "2"} {
		resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", e.token(pathAppRequest("code"), "http://127.0.0.1:"+port), nil)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("port %s: status %d", port, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("content type %q", ct)
		}
		var r coderhttp.Response
		_ = json.Unmarshal(body, &r)
		want := "Application port " + port + " is not permitted. Coder reserves ports less than 9 for internal use."
		if r.Message != want {
			t.Fatalf("message %q, want %q", r.Message, want)
		}
	}
	if d := e.agents.dialed(); len(d) != 0 {
		t.Fatalf("agent dialled: %v", d)
	}
}

func TestAppRedirects(t *testing.T) {
	e := newEnv(t, nil).start()
	var hits atomic.Int32
	app := countingApp(t, &hits)
	e.agents.set(3000, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://localhost:3000/?folder=/home/coder")

	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code?x=1", tok, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/@alice/dev.main/apps/code/" {
		t.Fatalf("no trailing slash: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp = e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/@alice/dev.main/apps/code/?folder=/home/coder" {
		t.Fatalf("default query: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if hits.Load() != 0 {
		t.Fatal("redirects reached the app")
	}

	// A user query wins over the app's default, and is forwarded as-is.
	resp = e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/?folder=/tmp&a=b%20c", tok, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-App-Query") != "folder=/tmp&a=b%20c" || resp.Header.Get("X-App-Path") != "/" {
		t.Fatalf("user query: %d query %q path %q", resp.StatusCode, resp.Header.Get("X-App-Query"), resp.Header.Get("X-App-Path"))
	}

	// Once a request has been proxied (its target remembered), the app's
	// default query still redirects.
	resp = e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/@alice/dev.main/apps/code/?folder=/home/coder" {
		t.Fatalf("default query after a proxied request: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// rawApp captures the raw request head the app receives.
func rawApp(t *testing.T) (addr string, heads <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				var head strings.Builder
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					head.WriteString(line)
					if line == "\r\n" {
						break
					}
				}
				ch <- head.String()
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			}()
		}
	}()
	return ln.Addr().String(), ch
}

func TestAppRequestHeaders(t *testing.T) {
	e := newEnv(t, nil).start()
	addr, heads := rawApp(t)
	e.agents.set(8080, addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	hdr := http.Header{
		"X-Forwarded-For":          {"1.1.1.1"},
		"Cookie":                   {"coder_session_token=secret; a=1; coder_subdomain_app_session_token_0123=s2; coder_signed_app_token=t; b=2", "coder_path_app_session_token=p; c=3"},
		"X-Wsedge-Internal":        {"leak"},
		"Sec-Websocket-Key":        {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version":    {"13"},
		"Sec-Websocket-Protocol":   {"chat"},
		"Sec-Websocket-Extensions": {"permessage-deflate"},
		"Authorization":            {"Bearer app-token"},
		"Coder-Session-Token":      {"kept"},
		// Visitor identity headers a client tries to forge.
		"X-Coder-User-Id":    {"00000000-0000-0000-0000-000000000001"},
		"X-Coder-Username":   {"admin"},
		"X-Coder-User-Email": {"admin@example.com"},
		// What Envoy tells its upstream about the client.
		"X-Envoy-External-Address": {"203.0.113.9"},
		"X-Envoy-Internal":         {"true"},
		"X-Request-Id":             {"3f0e8a52-7d0c-4c8e-9a43-6f7b0f1f2a11"},
	}
	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/sub/dir%2Fx?q=1&coder_session_token=z", tok, hdr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	head := <-heads
	lines := strings.Split(head, "\r\n")
	if lines[0] != "GET /sub/dir%2Fx?q=1&coder_session_token=z HTTP/1.1" {
		t.Fatalf("request line %q", lines[0])
	}
	has := func(line string) bool {
		for _, l := range lines {
			if l == line {
				return true
			}
		}
		return false
	}
	for _, want := range []string{
		"Host: " + testAccessHost,
		"X-Forwarded-For: 1.1.1.1",
		"X-Forwarded-Proto: https",
		"Cookie: a=1; b=2",
		"Cookie: c=3",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Protocol: chat",
		"Sec-WebSocket-Extensions: permessage-deflate",
		"Authorization: Bearer app-token",
		"Coder-Session-Token: kept",
		"X-Request-Id: 3f0e8a52-7d0c-4c8e-9a43-6f7b0f1f2a11",
	} {
		if !has(want) {
			t.Errorf("app did not receive %q; head:\n%s", want, head)
		}
	}
	lower := strings.ToLower(head)
	for _, bad := range []string{"x-wsedge-", "x-coder-user-id", "x-coder-username", "x-coder-user-email", "coder_session_token=secret", "coder_signed_app_token", "coder_subdomain_app_session_token", "coder_path_app_session_token", "sec-websocket-key: dg", "x-envoy-"} {
		if bad == "sec-websocket-key: dg" {
			if strings.Contains(head, "Sec-Websocket-Key") {
				t.Errorf("Go-canonical websocket header spelling reached the app:\n%s", head)
			}
			continue
		}
		if strings.Contains(lower, bad) {
			t.Errorf("app received %q:\n%s", bad, head)
		}
	}

	// An existing X-Forwarded-Proto is kept.
	hdr = http.Header{"X-Forwarded-Proto": {"http"}, "X-Forwarded-For": {"2.2.2.2, 10.0.0.1"}}
	resp = e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, hdr)
	resp.Body.Close()
	head = <-heads
	if !strings.Contains(head, "\r\nX-Forwarded-Proto: http\r\n") || !strings.Contains(head, "\r\nX-Forwarded-For: 2.2.2.2, 10.0.0.1\r\n") {
		t.Fatalf("forwarding headers changed:\n%s", head)
	}
	if got := e.agents.dialed(); len(got) == 0 || got[0] != testAgentID.String()+":8080" {
		t.Fatalf("dialled %v", got)
	}
}

func TestSubdomainAppAndHTTPSPort(t *testing.T) {
	e := newEnv(t, nil).start()
	var sawTLS atomic.Bool
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawTLS.Store(r.TLS != nil)
		_, _ = io.WriteString(w, "secure "+r.Host+" "+r.URL.RequestURI())
	}))
	defer app.Close()
	e.agents.set(8443, app.Listener.Addr().String())
	host := "8443s--main--dev--alice.apps.example.com"
	tok := e.token(subdomainAppRequest("8443s"), "https://127.0.0.1:8443")
	resp := e.do("GET", "http://"+host+"/x/y?z=1", tok, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "secure "+host+" /x/y?z=1" || !sawTLS.Load() {
		t.Fatalf("status %d body %q tls %v", resp.StatusCode, body, sawTLS.Load())
	}

	// A TLS server that is not Go's answers a plain HTTP request with a
	// TLS alert: 502 with the hint to switch to HTTPS.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 1024))
			_, _ = c.Write([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46})
			c.Close()
		}
	}()
	e.agents.set(9443, ln.Addr().String())
	tok = e.token(subdomainAppRequest("9443"), "http://127.0.0.1:9443")
	resp = e.do("GET", "http://9443--main--dev--alice.apps.example.com/", tok, nil)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !bytes.Contains(body, []byte("Switch to HTTPS")) ||
		!bytes.Contains(body, []byte(`href="https://9443s--main--dev--alice.apps.example.com"`)) {
		t.Fatalf("scheme mismatch: %d %s", resp.StatusCode, body)
	}
}

func TestSchemeMismatchToPlainHTTP(t *testing.T) {
	e := newEnv(t, nil).start()
	var hits atomic.Int32
	app := countingApp(t, &hits)
	e.agents.set(8080, app.Listener.Addr().String())
	tok := e.token(subdomainAppRequest("8080s"), "https://127.0.0.1:8080")
	resp := e.do("GET", "http://8080s--main--dev--alice.apps.example.com/p", tok, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !bytes.Contains(body, []byte("Switch to HTTP<")) ||
		!bytes.Contains(body, []byte(`href="https://8080--main--dev--alice.apps.example.com"`)) ||
		!bytes.Contains(body, []byte("This error seems to be due to an app protocol mismatch, try switching to HTTP.")) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

func TestDeadAgentBadGateway(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.DialTimeout = 300 * time.Millisecond }).start()
	e.agents.block = true
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	start := time.Now()
	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!bytes.Contains(body, []byte("Bad Gateway")) ||
		!bytes.Contains(body, []byte(`href="https://`+testDashboardHost+`"`)) {
		t.Fatalf("page: %s", body)
	}
	if bytes.Contains(body, []byte("Switch to")) {
		t.Fatal("scheme hint on a slug app")
	}
	// Bounded by the dial timeout, not the 15 s default or a hang
	// (slack for a loaded CI machine).
	if took > 5*time.Second {
		t.Fatalf("502 took %v with a 300ms dial timeout", took)
	}

	// Refused connections fail fast too.
	e.agents.block = false
	resp = e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("refused: %d", resp.StatusCode)
	}
}

func TestWebsocketEchoThroughProxy(t *testing.T) {
	e := newEnv(t, nil).start()
	var protoSeen atomic.Value
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protoSeen.Store(r.Header.Get("Sec-WebSocket-Protocol"))
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true, Subprotocols: []string{"echo"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(4 << 20)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	}))
	defer app.Close()
	e.agents.set(appPort(t, app), app.Listener.Addr().String())
	host := "echo--main--dev--alice.apps.example.com"
	tok := e.token(subdomainAppRequest("echo"), "http://127.0.0.1:"+itoa(appPort(t, app)))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+host+"/ws", &websocket.DialOptions{
		HTTPClient:   e.client,
		HTTPHeader:   http.Header{http.CanonicalHeaderKey(edgewire.AppTokenHeader): {tok}},
		Subprotocols: []string{"echo"},
	})
	if err != nil {
		t.Fatalf("dial: %v (resp %v)", err, resp)
	}
	defer c.CloseNow()
	c.SetReadLimit(4 << 20)
	if c.Subprotocol() != "echo" || protoSeen.Load() != "echo" {
		t.Fatalf("subprotocol %q, app saw %v", c.Subprotocol(), protoSeen.Load())
	}
	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	for i := 0; i < 2; i++ {
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageBinary || !bytes.Equal(got, msg) {
			t.Fatalf("echo mismatch: %d bytes", len(got))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	// A closed websocket leaves nothing behind for shutdown to wait on.
	stopStart := time.Now()
	e.stop()
	if d := time.Since(stopStart); d >= upgradeCutWait {
		t.Fatalf("shutdown waited %v for a closed websocket", d)
	}
}

func itoa(n uint16) string { return strconv.Itoa(int(n)) }

// TestUnderscoreSpellingsOfProtectedHeadersNeverReachTheApp: servers that
// fold '_' into '-' (uWSGI; Puma before 6.4.3/5.6.9) would read
// X_Forwarded_For as X-Forwarded-For, so underscore spellings of every
// header the proxy vouches for are dropped; other underscore headers are
// the app's business and pass.
func TestUnderscoreSpellingsOfProtectedHeadersNeverReachTheApp(t *testing.T) {
	e := newEnv(t, nil).start()
	addr, heads := rawApp(t)
	e.agents.set(8080, addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	hdr := http.Header{
		"X_Coder_User_Id":          {"00000000-0000-0000-0000-000000000001"},
		"x_coder_username":         {"admin"},
		"X-Coder_User-Email":       {"admin@example.com"},
		"X_Forwarded_For":          {"6.6.6.6"},
		"X_FORWARDED_HOST":         {"evil.example"},
		"X-Forwarded_Proto":        {"https"},
		"X_Wsedge_App_Token":       {"forged"},
		"X_Real_Ip":                {"6.6.6.6"},
		"X_Envoy_External_Address": {"6.6.6.6"},
		"Forwarded":                {"for=1.2.3.4"},
		"X_Custom_App":             {"kept"},
		"X-Forwarded-For":          {"1.1.1.1"},
	}
	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, hdr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	head := <-heads
	for _, line := range strings.Split(head, "\r\n") {
		name, _, _ := strings.Cut(line, ":")
		if strings.Contains(name, "_") && !strings.EqualFold(name, "X_Custom_App") {
			t.Errorf("the app received %q", line)
		}
	}
	for _, want := range []string{"X_custom_app: kept", "X-Forwarded-For: 1.1.1.1"} {
		if !strings.Contains(head, "\r\n"+want+"\r\n") {
			t.Errorf("the app did not receive %q:\n%s", want, head)
		}
	}
}

func TestIsUnderscoreSpelling(t *testing.T) {
	for name, want := range map[string]bool{
		"X_Coder_User_Id": true, "X_CODER_USERNAME": true, "x-coder_user-email": true,
		"X_Forwarded_For": true, "x_forwarded_anything": true, "X_Wsedge_App_Token": true,
		"x_envoy_original_path": true, "X_Real_IP": true, "Forwarded": false, "X_Request_Id": true,
		"X-Forwarded-For": false, "X-Coder-User-Id": false, "X_Custom": false, "Coder_Session_Token": false,
	} {
		if got := isUnderscoreSpelling(name); got != want {
			t.Errorf("isUnderscoreSpelling(%q) = %v, want %v", name, got, want)
		}
	}
}
