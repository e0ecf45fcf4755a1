package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	devagent "github.com/wsedge/wsedge/dev/agent"
)

// demoAgent is the demo catalog's agent "main" of alice's workspace "dev".
var demoAgent = uuid.MustParse("7a9e4b10-2c3d-4f5e-8a6b-a6e170000001")

// login walks the browser through the hand-off for appURL: the proxy
// sends it to the dashboard, the user logs in, the dashboard sends it back
// with the smuggled key. Redirects are followed by the client; the login
// form is posted by hand.
func (fp *edge) login(t *testing.T, appURL string) *http.Response {
	t.Helper()
	res, err := fp.browser.Get(appURL)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.Request.URL.Host != dashboardHost || res.Request.URL.Path != "/login" {
		t.Fatalf("anonymous %s ended at %s (status %d), want the dashboard login", appURL, res.Request.URL, res.StatusCode)
	}
	form := url.Values{"username": {"alice"}, "password": {"alice"}, "redirect": {res.Request.URL.Query().Get("redirect")}}
	res, err = fp.browser.PostForm("http://"+dashboardHost+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func received(t *testing.T, res *http.Response) devagent.Received {
	t.Helper()
	body := readAll(t, res)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d: %s", res.Request.URL, res.StatusCode, body)
	}
	var r devagent.Received
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%s: not the demo app's echo: %v\n%s", res.Request.URL, err, body)
	}
	return r
}

// TestFullPath: browser → Envoy → authz → dialer → tailnet (real WireGuard
// over DERP) → dev agent, for a path app, a subdomain app, a websocket app
// and a web terminal, with stats reported to the primary.
func TestFullPath(t *testing.T) {
	fp := startEdge(t, WithDev())

	t.Run("path app after the login hand-off", func(t *testing.T) {
		appURL := "http://" + accessHost + "/@alice/dev.main/apps/code/echo?x=1"
		res := fp.login(t, appURL)
		r := received(t, res)
		if res.Request.URL.String() != appURL {
			t.Errorf("ended at %s, want %s", res.Request.URL, appURL)
		}
		if r.Host != accessHost || r.Path != "/echo" || r.RawQuery != "x=1" {
			t.Errorf("the app saw %s %s?%s", r.Host, r.Path, r.RawQuery)
		}
		for _, c := range r.CookieNames {
			if strings.HasPrefix(c, "coder_") {
				t.Errorf("the app received Coder cookie %s", c)
			}
		}
		// Envoy appends the client address; for a loopback client it
		// appends its own local address instead (Envoy's rule), so the
		// check is that there is exactly one address and it is an IP.
		if _, err := netip.ParseAddr(r.XForwardedFor); err != nil {
			t.Errorf("X-Forwarded-For %q, want the one address Envoy appended", r.XForwardedFor)
		}
	})

	t.Run("subdomain app", func(t *testing.T) {
		appURL := "http://" + codeHost + "/echo"
		res, err := fp.browser.Get(appURL)
		if err != nil {
			t.Fatal(err)
		}
		// A different cookie scope: a second hand-off, but the dashboard
		// session makes it a pure redirect chain.
		r := received(t, res)
		if r.Host != codeHost {
			t.Errorf("the app saw Host %q", r.Host)
		}
		res, err = fp.browser.Get("http://" + codeHost + "/bytes?n=1048576")
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); body != string(devagent.PatternBytes(1<<20)) {
			t.Errorf("1 MiB through the tailnet: got %d bytes, not the pattern", len(body))
		}
	})

	t.Run("websocket app echoes 1 MiB both ways", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := fp.browser.Get("http://" + echoHost + "/"); err != nil { // hand-off for this app
			t.Fatal(err)
		}
		u, _ := url.Parse("http://" + echoHost + "/")
		var cookies []string
		for _, c := range fp.browser.Jar.Cookies(u) {
			cookies = append(cookies, c.Name+"="+c.Value)
		}
		h := http.Header{"Cookie": {strings.Join(cookies, "; ")}}
		c, _, err := fp.dialWebsocket(ctx, "ws://"+echoHost+"/", h)
		if err != nil {
			t.Fatalf("websocket: %v", err)
		}
		defer c.CloseNow()
		c.SetReadLimit(2 << 20)
		msg := bytes.Repeat([]byte("wsedge!\n"), 1<<17) // 1 MiB
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %d bytes, err %v", len(got), err)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("terminal runs a command and resumes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ptyURL, token := fp.ptyToken(t, demoAgent)
		reconnect := uuid.New()
		open := func() *websocket.Conn {
			c, err := fp.openTerminal(ctx, ptyURL, token, reconnect)
			if err != nil {
				t.Fatalf("terminal: %v", err)
			}
			return c
		}
		expect := func(c *websocket.Conn, want string) {
			if out, err := readUntil(ctx, c, want); err != nil {
				t.Fatalf("terminal read (have %q): %v", out, err)
			}
		}
		c := open()
		if err := c.Write(ctx, websocket.MessageBinary, termInput("echo hel''lo-from-wsedge\r")); err != nil {
			t.Fatal(err)
		}
		expect(c, "hello-from-wsedge")
		_ = c.Close(websocket.StatusNormalClosure, "")

		c = open() // same reconnect ID: the same screen comes back
		defer c.CloseNow()
		expect(c, "hello-from-wsedge")
	})

	t.Run("stats reach the primary", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			var slugs []string
			for _, s := range fp.dev.Primary.AppStats() {
				slugs = append(slugs, s.AccessMethod+":"+s.SlugOrPort)
			}
			got := strings.Join(slugs, ",")
			if strings.Contains(got, "path:code") && strings.Contains(got, "subdomain:code") && strings.Contains(got, "terminal:") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("stats on the primary: %s", got)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("healthz-report through the edge", func(t *testing.T) {
		res, err := fp.browser.Get("http://" + accessHost + "/healthz-report")
		if err != nil {
			t.Fatal(err)
		}
		var report struct {
			Errors   []string `json:"errors"`
			Warnings []string `json:"warnings"`
		}
		if err := json.Unmarshal([]byte(readAll(t, res)), &report); err != nil || res.StatusCode != http.StatusOK || len(report.Errors) != 0 {
			t.Fatalf("healthz-report: status %d, %+v, %v", res.StatusCode, report, err)
		}
	})

	t.Run("a forged token straight to the dialer is refused", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+fp.dev.DialerAddr.String()+"/echo", nil)
		req.Host = codeHost
		req.Header.Set("X-Wsedge-App-Token", "eyJhbGciOiJIUzUxMiIsImtpZCI6IjEifQ.e30.AAAA")
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if res.StatusCode != http.StatusUnauthorized || strings.Contains(body, `"x_forwarded_for"`) {
			t.Errorf("forged token: status %d, body %q", res.StatusCode, body)
		}
	})

	t.Run("a dead agent gives a 502 page within the dial timeout", func(t *testing.T) {
		if err := fp.dev.StopAgent(demoAgent); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := fp.browser.Get("http://" + codeHost + "/echo")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if res.StatusCode != http.StatusBadGateway || !strings.Contains(res.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("status %d (%s), want Coder's 502 page: %.300s", res.StatusCode, res.Header.Get("Content-Type"), body)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("the 502 took %v", took)
		}
	})
}
