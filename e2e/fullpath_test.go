package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/internal/testutil"
	"github.com/wsedge/wsedge/tokens"
)

// demoAgent is the demo catalog's agent "main" of alice's workspace "dev".
var demoAgent = uuid.MustParse("7a9e4b10-2c3d-4f5e-8a6b-a6e170000001")

// fullPath is the whole deployment of `wsedge dev` with test hostnames: a
// browser that reaches the dashboard (dev primary) and the proxy (Envoy) by
// name, with a cookie jar.
type fullPath struct {
	dev     *devstack.Dev
	browser *http.Client
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
}

func startFullPath(t *testing.T) *fullPath {
	t.Helper()
	return startFullPathWith(t, nil)
}

// startFullPathWith is startFullPath with the configuration adjusted by
// edit (nil: none).
func startFullPathWith(t *testing.T, edit func(*devstack.DevConfig)) *fullPath {
	t.Helper()
	lvl := slog.LevelWarn
	if os.Getenv("E2E_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if edit == nil {
		return startFullPathLogging(t, log)
	}
	return startFullPathLogging(t, log, edit)
}

// startFullPathLogging is startFullPath with the services logging to log;
// edits change the deployment before it starts.
func startFullPathLogging(t *testing.T, log *slog.Logger, edits ...func(*devstack.DevConfig)) *fullPath {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := devstack.DevConfig{
		DashboardURL:       &url.URL{Scheme: "http", Host: dashboardHost},
		AccessURL:          &url.URL{Scheme: "http", Host: accessHost},
		WildcardHostname:   wildcardHost,
		PrimaryListen:      netip.MustParseAddrPort("127.0.0.1:0"),
		EdgeListen:         netip.MustParseAddrPort("127.0.0.1:0"),
		EnvoyBinary:        testutil.EnvoyBinary(t),
		Dir:                t.TempDir(),
		Logger:             log,
		StatsFlushInterval: 200 * time.Millisecond,
		DialTimeout:        3 * time.Second,
		Progress:           func(step string) { t.Logf("dev: starting %s", step) },
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	dev, err := devstack.StartDev(ctx, cfg)
	if err != nil {
		t.Fatalf("StartDev: %v", err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("dev.Close: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(dev.Envoy.StdoutPath())
			t.Logf("Envoy access log:\n%s", b)
		}
	})
	fp := &fullPath{dev: dev}
	fp.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		target := dev.EdgeAddr.String()
		if host, _, _ := net.SplitHostPort(addr); host == dashboardHost {
			target = dev.PrimaryAddr.String()
		}
		return (&net.Dialer{}).DialContext(ctx, network, target)
	}
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{DialContext: fp.dial}
	t.Cleanup(tr.CloseIdleConnections)
	fp.browser = &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second}
	return fp
}

// login walks the browser through the hand-off for appURL: the proxy
// sends it to the dashboard, the user logs in, the dashboard sends it back
// with the smuggled key. Redirects are followed by the client; the login
// form is posted by hand.
func (fp *fullPath) login(t *testing.T, appURL string) *http.Response {
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
	fp := startFullPath(t)

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
		c, _, err := websocket.Dial(ctx, "ws://"+echoHost+"/", &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: fp.dial}}, HTTPHeader: h})
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
		session, _ := fp.dev.Primary.SessionToken("alice")
		ptyURL := "ws://" + accessHost + "/api/v2/workspaceagents/" + demoAgent.String() + "/pty"
		body, _ := json.Marshal(map[string]string{"url": ptyURL, "agentID": demoAgent.String()})
		req, _ := http.NewRequest(http.MethodPost, "http://"+dashboardHost+"/api/v2/applications/reconnecting-pty-signed-token", bytes.NewReader(body))
		req.Header.Set("Coder-Session-Token", session)
		req.Header.Set("Content-Type", "application/json")
		res, err := fp.browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var tok struct {
			SignedToken string `json:"signed_token"`
		}
		if err := json.Unmarshal([]byte(readAll(t, res)), &tok); err != nil || tok.SignedToken == "" {
			t.Fatalf("reconnecting-pty-signed-token: status %d, %v", res.StatusCode, err)
		}
		reconnect := uuid.New()
		open := func() *websocket.Conn {
			q := url.Values{"reconnect": {reconnect.String()}, "width": {"80"}, "height": {"24"}, tokens.SignedAppTokenQueryParam: {tok.SignedToken}}
			c, res, err := websocket.Dial(ctx, ptyURL+"?"+q.Encode(), &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: fp.dial}}})
			if err != nil {
				status := 0
				if res != nil {
					status = res.StatusCode
				}
				t.Fatalf("terminal: %v (status %d)", err, status)
			}
			return c
		}
		readUntil := func(c *websocket.Conn, want string) string {
			var out strings.Builder
			for !strings.Contains(out.String(), want) {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("terminal read (have %q): %v", out.String(), err)
				}
				out.Write(b)
			}
			return out.String()
		}
		c := open()
		in, _ := json.Marshal(map[string]string{"data": "echo hel''lo-from-wsedge\r"})
		if err := c.Write(ctx, websocket.MessageBinary, in); err != nil {
			t.Fatal(err)
		}
		readUntil(c, "hello-from-wsedge")
		_ = c.Close(websocket.StatusNormalClosure, "")

		c = open() // same reconnect ID: the same screen comes back
		defer c.CloseNow()
		readUntil(c, "hello-from-wsedge")
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
