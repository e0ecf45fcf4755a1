package dialer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsedge/wsedge/edgewire"
)

func get(t *testing.T, e *testEnv, rawURL string) (*http.Response, string) {
	t.Helper()
	resp := e.do("GET", rawURL, "", nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestMiscRoutes(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Health = []HealthCheck{
			HealthCheckFunc(func(context.Context) ([]string, []string) { return nil, []string{"mesh peer unreachable"} }),
			HealthCheckFunc(func(context.Context) ([]string, []string) { return []string{"primary unreachable"}, nil }),
		}
	}).start()
	base := "http://" + testAccessHost

	resp, body := get(t, e, base+"/healthz")
	if resp.StatusCode != 200 || body != "OK" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}

	resp, body = get(t, e, base+"/healthz-report")
	if resp.StatusCode != 200 || body != `{"errors":["primary unreachable"],"warnings":["mesh peer unreachable"]}`+"\n" {
		t.Errorf("/healthz-report: %d %q", resp.StatusCode, body)
	}

	resp, body = get(t, e, base+"/api/v2/buildinfo")
	var bi map[string]any
	if err := json.Unmarshal([]byte(body), &bi); err != nil || resp.StatusCode != 200 {
		t.Fatalf("buildinfo %d %q", resp.StatusCode, body)
	}
	if bi["workspace_proxy"] != true || bi["dashboard_url"] != "https://"+testDashboardHost || bi["version"] != "v9.9.9-test" ||
		bi["agent_api_version"] != "1.0" || bi["external_url"] != ExternalURL {
		t.Errorf("buildinfo %v", bi)
	}

	resp, body = get(t, e, base+"/latency-check")
	if resp.StatusCode != 200 || body != "OK" || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		resp.Header.Get("Timing-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Headers") != "*" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "*" || resp.Header.Get("Access-Control-Allow-Credentials") != "false" {
		t.Errorf("/latency-check: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	for _, p := range []string{"/derp", "/derp/latency-check"} {
		resp, body = get(t, e, base+p)
		if resp.StatusCode != 400 || body != `{"message":"DERP is disabled on this proxy."}`+"\n" {
			t.Errorf("%s without DERP: %d %q", p, resp.StatusCode, body)
		}
	}

	for _, p := range []string{"/", "/api/v2/users/me", "/@alice/dev/nope"} {
		resp, body = get(t, e, base+p)
		if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(body, "Head to the Dashboard") || !strings.Contains(body, `href="https://`+testDashboardHost+`"`) {
			t.Errorf("%s: %d %q", p, resp.StatusCode, body)
		}
	}

	// App URL errors rendered by the dialer itself.
	resp, body = get(t, e, "http://not_valid.apps.example.com/")
	if resp.StatusCode != 400 || !strings.Contains(body, "Invalid Application URL") {
		t.Errorf("bad subdomain: %d %q", resp.StatusCode, body)
	}
	resp, body = get(t, e, base+"/@me/dev/apps/code/")
	if resp.StatusCode != 404 || !strings.Contains(body, "Application Not Found") || !strings.Contains(body, "not @me") {
		t.Errorf("@me: %d %q", resp.StatusCode, body)
	}
	resp, _ = get(t, e, "http://coder-logout.apps.example.com/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "https://"+testAccessHost {
		t.Errorf("logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// On an app host, /healthz belongs to the app (and needs a token).
	resp, _ = get(t, e, "http://code--main--dev--alice.apps.example.com/healthz")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("app /healthz: %d", resp.StatusCode)
	}
}

func TestDERPDelegated(t *testing.T) {
	var paths []string
	e := newEnv(t, func(o *Options) {
		o.DERP = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			paths = append(paths, r.URL.Path)
			w.WriteHeader(http.StatusTeapot)
		})
	}).start()
	for _, p := range []string{"/derp", "/derp/latency-check"} {
		resp, _ := get(t, e, "http://"+testAccessHost+p)
		if resp.StatusCode != http.StatusTeapot {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	if len(paths) != 2 {
		t.Fatalf("DERP handler saw %v", paths)
	}
}

func TestHealthReportDuringShutdown(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.beginShutdown()
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://"+testAccessHost+"/healthz-report", nil))
	if rec.Code != 500 || rec.Body.String() != `"workspace proxy in middle of shutting down"`+"\n" {
		t.Fatalf("%d %q", rec.Code, rec.Body.String())
	}
}

func TestH2C(t *testing.T) {
	e := newEnv(t, nil).start()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.addr)
		},
	}
	defer tr.CloseIdleConnections()
	addr, heads := rawApp(t)
	e.agents.set(8080, addr)
	req, _ := http.NewRequest("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/x", nil)
	req.Header.Set(edgewire.AppTokenHeader, e.token(pathAppRequest("code"), "http://127.0.0.1:8080"))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("proto %s status %d body %q", resp.Proto, resp.StatusCode, body)
	}
	if head := <-heads; !strings.Contains(head, "Host: "+testAccessHost+"\r\n") {
		t.Fatalf("h2 request lost its Host:\n%s", head)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(o *Options) { o.Registerer = reg }).start()
	get(t, e, "http://"+testAccessHost+"/healthz")
	get(t, e, "http://"+testAccessHost+"/@alice/dev.main/apps/code/")
	rec := httptest.NewRecorder()
	e.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`wsedge_dialer_requests_total{code="200",route="healthz"} 1`,
		`wsedge_dialer_requests_total{code="401",route="path"} 1`,
		`wsedge_dialer_app_token_refused_total{reason="missing"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) == 0 {
		t.Fatalf("external registerer got nothing: %v", err)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	good := newEnv(t, nil).options
	cases := map[string]func(*Options){
		"no access URL":    func(o *Options) { o.AccessURL = nil },
		"no dashboard URL": func(o *Options) { o.DashboardURL = &url.URL{} },
		"no verifier":      func(o *Options) { o.Verifier = nil },
		"no agents":        func(o *Options) { o.Agents = nil },
		"negative timeout": func(o *Options) { o.DialTimeout = -time.Second },
	}
	for name, mutate := range cases {
		o := good
		mutate(&o)
		if _, err := New(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

func TestShutdownLetsInFlightRequestFinish(t *testing.T) {
	e := newEnv(t, nil).start()
	release := make(chan struct{})
	started := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "finished")
	}))
	defer app.Close()
	e.agents.set(appPort(t, app), app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(appPort(t, app)))
	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b)}
	}()
	<-started
	e.cancel()
	// New connections are refused soon after shutdown begins.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	r := <-done
	if r.status != 200 || r.body != "finished" {
		t.Fatalf("in-flight request: %d %q", r.status, r.body)
	}
}

func TestShutdownCutsAppWebsocketAtDeadline(t *testing.T) {
	appSides(t, shutdownCutsAppWebsocketAtDeadline)
}

func shutdownCutsAppWebsocketAtDeadline(t *testing.T, watch func(*testEnv) *testEnv) {
	e := watch(newEnv(t, func(o *Options) { o.ShutdownGrace = 300 * time.Millisecond }).start())
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			_ = c.Write(r.Context(), typ, b)
		}
	}))
	defer app.Close()
	port := appPort(t, app)
	e.agents.set(port, app.Listener.Addr().String())
	tok := e.token(subdomainAppRequest("echo"), "http://127.0.0.1:"+itoa(port))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://echo--main--dev--alice.apps.example.com/", &websocket.DialOptions{
		HTTPClient: e.client, HTTPHeader: http.Header{http.CanonicalHeaderKey(edgewire.AppTokenHeader): {tok}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "hi" {
		t.Fatalf("echo %q %v", b, err)
	}

	start := time.Now()
	e.cancel()
	// The app websocket keeps working during the grace period...
	if err := c.Write(ctx, websocket.MessageText, []byte("still")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "still" {
		t.Fatalf("during grace: %q %v", b, err)
	}
	// ...and is cut when it ends; Serve returns.
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("websocket survived shutdown")
	}
	select {
	case err := <-e.served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	e.cancel = nil
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("cut after %v, want about the 300ms grace", d)
	}
}

// TestLatencyCheckOnAppHosts: the dashboard's latency probe is answered on
// every host, as Coder's proxy does (it mounts /latency-check in front of
// its subdomain-app middleware); Envoy sends it without ext_authz, so on
// an app host it must neither reach the app nor count as a refused token.
func TestLatencyCheckOnAppHosts(t *testing.T) {
	e := newEnv(t, nil).start()
	for _, host := range []string{testAccessHost, "code--main--dev--alice.apps.example.com", "8080--main--dev--alice.apps.example.com"} {
		resp, body := get(t, e, "http://"+host+"/latency-check")
		if resp.StatusCode != http.StatusOK || body != "OK" || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Timing-Allow-Origin") != "*" {
			t.Errorf("%s/latency-check: %d %q %v, want Coder's latency answer", host, resp.StatusCode, body, resp.Header)
		}
	}
	// Only the exact path Envoy lets through unchecked: anything else on an
	// app host is the app's and needs a token.
	for _, p := range []string{"/latency-check/", "/latency%2Dcheck", "/latency-check2"} {
		if resp, _ := get(t, e, "http://code--main--dev--alice.apps.example.com"+p); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("app host %s: %d, want the app's route (401 without a token)", p, resp.StatusCode)
		}
	}
	rec := httptest.NewRecorder()
	e.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := `wsedge_dialer_app_token_refused_total{reason="missing"} 3` + "\n"; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %q (the three app paths, none of the latency probes)", want)
	}
}

// TestProxyHeaders: what Coder's proxy puts on everything outside its
// subdomain-app handler — X-Coder-Build-Version and nosniff — is on the
// dialer's answers for the access host (probes, pages, path apps, their
// refusals) and not on subdomain apps' or the latency probe's.
func TestProxyHeaders(t *testing.T) {
	e := newEnv(t, nil).start()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "app")
	}))
	defer app.Close()
	e.agents.set(8080, app.Listener.Addr().String())
	base := "http://" + testAccessHost
	subHost := "http://code--main--dev--alice.apps.example.com"
	cases := []struct {
		name, url, token string
		status           int
		proxy            bool
	}{
		{"healthz", base + "/healthz", "", 200, true},
		{"buildinfo", base + "/api/v2/buildinfo", "", 200, true},
		{"dashboard page", base + "/", "", 400, true},
		{"@me", base + "/@me/dev/apps/code/", "", 404, true},
		{"path app", base + "/@alice/dev.main/apps/code/", e.token(pathAppRequest("code"), "http://127.0.0.1:8080"), 200, true},
		{"path app without a token", base + "/@alice/dev.main/apps/code/", "", 401, true},
		{"subdomain app", subHost + "/", e.token(subdomainAppRequest("code"), "http://127.0.0.1:8080"), 200, false},
		{"subdomain app without a token", subHost + "/", "", 401, false},
		{"invalid subdomain", "http://not_valid.apps.example.com/", "", 400, false},
		{"latency probe", base + "/latency-check", "", 200, false},
	}
	for _, c := range cases {
		resp := e.do("GET", c.url, c.token, nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d", c.name, resp.StatusCode, c.status)
		}
		version := resp.Header.Values("X-Coder-Build-Version")
		switch {
		case c.proxy && (len(version) != 1 || version[0] != "v9.9.9-test" || resp.Header.Get("X-Content-Type-Options") != "nosniff"):
			t.Errorf("%s: X-Coder-Build-Version %q, X-Content-Type-Options %q; want v9.9.9-test and nosniff", c.name, version, resp.Header.Values("X-Content-Type-Options"))
		case !c.proxy && len(version) != 0:
			t.Errorf("%s: X-Coder-Build-Version %q, want none", c.name, version)
		}
	}
}
