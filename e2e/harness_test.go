package e2e

// One harness starts every stack of these tests: startEdge(t, options...)
// returns an *edge (Envoy's address, clients that send every host to
// Envoy, the Envoy process, the dev deployment if any, helpers). Which
// stack you get depends on the options:
//
//   - Go stand-ins behind real Envoy with the generated config (smoke,
//     CORS, rate limits): WithAuthz(az, realExtProc(t, owners, reg)) serves
//     your ext_authz (and ext_proc) on one gRPC server, WithUpstream(h)
//     stands h in for the dialer, WithEnvoy(edit) edits envoy.Config,
//     WithJWKS(keys) serves the JWKS Envoy's fast path verifies app tokens
//     with (without it the generated config has no fast path: its warm
//     routes leave the token to the dialer, which a stand-in upstream is
//     not), and WithTLS(roots) makes the clients speak TLS (set the
//     certificate with WithEnvoy).
//   - the real authz service with the dev primary and a fake upstream:
//     withRealAuthz(az) (authz_test.go), with WithUpstream and WithJar.
//   - the whole path (devstack.StartDev: dev primary, Envoy, authz,
//     dialer, tailnet, dev agent): WithDev(edits...), plus WithMetrics,
//     WithQuietLogs or WithLogger, withFaults(f) (fault_helpers_test.go:
//     a primary the test can slow, cut or take down), and benchPath()
//     (bench_test.go: the option set of benchmarks and soaks).
//   - WithoutFastPath() turns Envoy's fast path off in the generated
//     config and in WithDev's (every app request meets ext_authz).
//   - a hand-written bootstrap: WithBootstrap(yaml, listener), or
//     WithMinimalEnvoy() (one listener, the router, one cluster) in front
//     of WithUpstream / WithUpstreamAddr: the baselines of the benchmarks.
//   - `wsedge dev` as a process (bin/wsedge): startWsedgeDev in
//     browser_test.go, which drives it as a user would.
//
// Options named With… are the harness's own; with… (lower case) are a
// test file's set of stand-ins, built from them.
//
// Clients: h.client follows no redirects (keeps cookies with WithJar);
// h.browser keeps cookies and follows redirects; h.newClient, h.newBrowser,
// h.plainClient and h.httpClient make more. The dashboard host goes to the
// dev primary (WithDev, withRealAuthz), every other host to Envoy.
// h.roundTrip, h.get, h.do and h.dialWebsocket send through them.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/wsedge/wsedge/authz"
	devprimary "github.com/wsedge/wsedge/dev/primary"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/extproc"
	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/internal/testutil"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tokens"
)

// Hostnames of every stack: the access URL, the wildcard app host and the
// dashboard (the dev primary).
const (
	accessHost    = "proxy.wsedge.test"
	wildcardHost  = "*.apps.wsedge.test"
	dashboardHost = "dashboard.wsedge.test"
	codeHost      = "code--main--dev--alice.apps.wsedge.test"
	echoHost      = "echo--main--dev--alice.apps.wsedge.test"
)

// edge is a running stack behind real Envoy.
type edge struct {
	t testing.TB
	// addr is Envoy's listener, host:port.
	addr string
	// envoy is the Envoy process of a stack without WithDev (dev.Envoy
	// otherwise); cfg the generated configuration it runs, if generated.
	envoy *testutil.EnvoyProc
	cfg   envoy.Config
	// grpc serves WithAuthz's servers.
	grpc *grpc.Server
	// dev is the whole deployment (WithDev).
	dev *devstack.Dev
	// primary is the dev primary (WithDev, withRealAuthz).
	primary *devprimary.Server
	// dial sends the dashboard host to the dev primary and every other
	// host to Envoy.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	tls  *tls.Config
	// client follows no redirects; with WithJar it keeps cookies in jar.
	client *http.Client
	jar    http.CookieJar
	// browser keeps cookies and follows redirects.
	browser *http.Client
	// authzMetrics and dialerMetrics are the services' registries
	// (WithMetrics).
	authzMetrics, dialerMetrics *prometheus.Registry
	// codeCookie and echoCookie are `coder_signed_app_token=…` for the
	// code (HTTP) and echo (websocket) subdomain apps (WithWarmCookies).
	codeCookie, echoCookie string
}

// edgeOption configures startEdge. Options run in order, with the test at
// hand, before anything of the stack starts; they may start stand-ins.
type edgeOption func(*edgeSetup)

// edgeSetup is what the options say.
type edgeSetup struct {
	t testing.TB
	// Envoy with a generated config (no WithDev, no WithBootstrap).
	envoyEdits              []func(*envoy.Config)
	authzAddr, upstreamAddr string
	jwksAddr                string
	grpc                    *grpc.Server
	// A hand-written bootstrap and the listener clients go to.
	bootstrap []byte
	listener  string
	minimal   bool
	// The whole path.
	dev         bool
	devEdits    []func(*devstack.DevConfig)
	metrics     bool
	beforeClose []func()
	// Every stack.
	dashboardAddr string
	primary       *devprimary.Server
	tls           *tls.Config
	noFastPath    bool
	jar           bool
	logger        *slog.Logger
	level         slog.Level
	after         []func(*edge)
}

// WithEnvoy edits the generated Envoy configuration.
func WithEnvoy(edit func(*envoy.Config)) edgeOption {
	return func(s *edgeSetup) { s.envoyEdits = append(s.envoyEdits, edit) }
}

// WithoutFastPath generates the edge without Envoy's fast path (every app
// request meets ext_authz, and ext_proc processes every app response), with
// WithEnvoy's config as with WithDev's.
func WithoutFastPath() edgeOption {
	return func(s *edgeSetup) { s.noFastPath = true }
}

// WithJWKS serves keys as authz's internal JWKS on loopback, where the
// generated config's fast path fetches them (without it Envoy's JWKS
// address is the default one, where nothing of the test listens).
func WithJWKS(keys ...tokens.Key) edgeOption {
	return func(s *edgeSetup) {
		ln := loopback(s.t)
		srv := &http.Server{Handler: authz.JWKSHandler(jwksKeys(keys), nil, nil), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		s.t.Cleanup(func() { _ = srv.Close() })
		s.jwksAddr = ln.Addr().String()
	}
}

// jwksKeys lists the same keys for every feature.
type jwksKeys []tokens.Key

func (k jwksKeys) Keys(tokens.Feature) []tokens.Key { return k }

// WithTLS makes the clients speak TLS to Envoy with cfg (HTTP/2 by ALPN,
// HTTP/1.1 for websockets). The Envoy side is WithEnvoy's TLS files.
func WithTLS(cfg *tls.Config) edgeOption {
	return func(s *edgeSetup) { s.tls = cfg }
}

// WithAuthz serves az and, if not nil, proc on one loopback gRPC server
// (as production serves authz and ext_proc), Envoy's authz cluster.
func WithAuthz(az authv3.AuthorizationServer, proc extprocv3.ExternalProcessorServer) edgeOption {
	return func(s *edgeSetup) {
		gs := grpc.NewServer()
		authv3.RegisterAuthorizationServer(gs, az)
		if proc != nil {
			extprocv3.RegisterExternalProcessorServer(gs, proc)
		}
		ln := loopback(s.t)
		go func() { _ = gs.Serve(ln) }()
		s.t.Cleanup(gs.Stop)
		s.grpc, s.authzAddr = gs, ln.Addr().String()
	}
}

// realExtProc is the real app-policy processor for the wildcard host,
// with owners standing in for the primary's resolve-app-owner.
func realExtProc(t testing.TB, owners extproc.OwnerResolver, reg prometheus.Registerer) *extproc.Processor {
	t.Helper()
	p, err := extproc.New(extproc.Options{WildcardHostname: wildcardHost, Owners: owners, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// WithUpstream serves handler on loopback in place of the dialer.
func WithUpstream(handler http.Handler) edgeOption {
	return func(s *edgeSetup) {
		ln := loopback(s.t)
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		s.t.Cleanup(func() { _ = srv.Close() })
		s.upstreamAddr = ln.Addr().String()
	}
}

// WithUpstreamAddr sends Envoy's upstream traffic to addr (a server the
// test runs elsewhere).
func WithUpstreamAddr(addr string) edgeOption {
	return func(s *edgeSetup) { s.upstreamAddr = addr }
}

// WithBootstrap runs Envoy with bootstrap; clients go to its listener.
func WithBootstrap(bootstrap []byte, listener string) edgeOption {
	return func(s *edgeSetup) { s.bootstrap, s.listener = bootstrap, listener }
}

// WithMinimalEnvoy runs a minimal Envoy (one listener, the router, one
// static cluster, no access log) in front of the upstream: the baseline
// of "Envoy straight to the app".
func WithMinimalEnvoy() edgeOption {
	return func(s *edgeSetup) { s.minimal = true }
}

// WithDev starts the whole path with devstack.StartDev (test hostnames,
// loopback ports, the dialer's stats upload every 200 ms and a 3 s dial
// timeout), edits applied first.
func WithDev(edits ...func(*devstack.DevConfig)) edgeOption {
	return func(s *edgeSetup) {
		s.dev = true
		s.devEdits = append(s.devEdits, edits...)
	}
}

// logEveryRequest is a WithDev edit: Envoy's access log records every
// request (--access-log=all), for tests that read the line of one that
// succeeded; as shipped it records errors only.
func logEveryRequest(c *devstack.DevConfig) {
	edit := c.Envoy
	c.Envoy = func(e *envoy.Config) {
		if edit != nil {
			edit(e)
		}
		e.AccessLog = envoy.AccessLogAll
	}
}

// asDeployed keeps the dialer's own dial timeout and stats upload.
func asDeployed(c *devstack.DevConfig) { c.StatsFlushInterval, c.DialTimeout = 0, 0 }

// WithMetrics gives authz and the dialer of WithDev registries of their
// own, h.authzMetrics and h.dialerMetrics (a service started again would
// find its collectors taken, so tests that restart one go without).
func WithMetrics() edgeOption {
	return func(s *edgeSetup) { s.metrics = true }
}

// WithLogger sends the services' logs to l.
func WithLogger(l *slog.Logger) edgeOption {
	return func(s *edgeSetup) { s.logger = l }
}

// WithQuietLogs logs errors only (warnings and up without it);
// E2E_LOG=debug shows everything either way.
func WithQuietLogs() edgeOption {
	return func(s *edgeSetup) { s.level = slog.LevelError }
}

// WithJar makes h.client keep cookies (h.jar).
func WithJar() edgeOption {
	return func(s *edgeSetup) { s.jar = true }
}

// WithWarmCookies obtains h.codeCookie and h.echoCookie once the stack is
// up, with alice's session token (WithDev).
func WithWarmCookies() edgeOption {
	return func(s *edgeSetup) {
		s.after = append(s.after, func(h *edge) {
			scheme := "http://"
			if h.tls != nil {
				scheme = "https://"
			}
			h.codeCookie = h.warmCookie(h.t, scheme+codeHost+"/bytes?n=1")
			h.echoCookie = h.warmCookie(h.t, scheme+echoHost+"/")
		})
	}
}

func (s *edgeSetup) log() *slog.Logger {
	if s.logger != nil {
		return s.logger
	}
	lvl := s.level
	if os.Getenv("E2E_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// startEdge starts the stack the options describe on loopback ports the
// kernel chooses; everything stops when the test ends.
func startEdge(t testing.TB, opts ...edgeOption) *edge {
	t.Helper()
	s := &edgeSetup{t: t, level: slog.LevelWarn}
	for _, o := range opts {
		o(s)
	}
	h := &edge{t: t, tls: s.tls, grpc: s.grpc, primary: s.primary}
	if s.dev {
		h.startDev(s)
	} else {
		h.startEnvoy(s)
	}
	edgeAddr, dashboardAddr := h.addr, s.dashboardAddr
	h.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		target := edgeAddr
		if host, _, _ := net.SplitHostPort(addr); host == dashboardHost && dashboardAddr != "" {
			target = dashboardAddr
		}
		return (&net.Dialer{}).DialContext(ctx, network, target)
	}
	h.client = h.newClient(t, clientOpts{jar: s.jar, conns: 100})
	h.jar = h.client.Jar
	h.browser = h.newBrowser(t)
	for _, f := range s.after {
		f(h)
	}
	return h
}

// startEnvoy runs Envoy with the generated config or the given bootstrap.
func (h *edge) startEnvoy(s *edgeSetup) {
	t := s.t
	t.Helper()
	bootstrap, listener := s.bootstrap, s.listener
	switch {
	case s.minimal:
		_, port, err := net.SplitHostPort(s.upstreamAddr)
		if err != nil {
			t.Fatalf("minimal Envoy: upstream %q: %v", s.upstreamAddr, err)
		}
		bootstrap, listener = fmt.Appendf(nil, minimalBootstrap, port), "direct"
		if out, err := testutil.ValidateEnvoyConfig(t, bootstrap); err != nil {
			t.Fatalf("minimal Envoy config does not validate: %v\n%s", err, out)
		}
	case bootstrap == nil:
		cfg := envoy.DefaultConfig()
		cfg.ListenAddr = netip.MustParseAddrPort("127.0.0.1:0")
		cfg.AdminAddr = netip.MustParseAddrPort("127.0.0.1:0")
		cfg.AccessURLHost = accessHost
		cfg.WildcardHostname = wildcardHost
		cfg.DashboardURL = "http://" + dashboardHost
		cfg.AuthzAddr = s.authzAddr
		cfg.DialerAddr = s.upstreamAddr
		if s.jwksAddr != "" {
			cfg.AuthzJWKSAddr = s.jwksAddr
		}
		// The warm routes send token cookies to the dialer unchecked: only
		// a test that serves the JWKS (and so means the fast path) gets it
		// in front of a stand-in upstream.
		cfg.FastPath = !s.noFastPath && s.jwksAddr != ""
		for _, edit := range s.envoyEdits {
			edit(&cfg)
		}
		h.cfg = cfg
		var err error
		if bootstrap, err = envoy.YAML(cfg); err != nil {
			t.Fatal(err)
		}
		listener = envoy.ListenerName
	}
	h.envoy = testutil.StartEnvoy(t, bootstrap)
	if !strings.Contains(h.envoy.Version, "/1.40.0/") {
		t.Errorf("Envoy version %q, want 1.40.0", h.envoy.Version)
	}
	h.addr = h.envoy.ListenerAddr(t, listener).String()
}

// startDev starts the whole deployment.
func (h *edge) startDev(s *edgeSetup) {
	t := s.t
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
		Logger:             s.log(),
		StatsFlushInterval: 200 * time.Millisecond,
		DialTimeout:        3 * time.Second,
		NoFastPath:         s.noFastPath,
	}
	if _, ok := t.(*testing.T); ok { // benchmark output stays figures only
		cfg.Progress = func(step string) { t.Logf("dev: starting %s", step) }
	}
	if s.metrics {
		h.authzMetrics, h.dialerMetrics = prometheus.NewRegistry(), prometheus.NewRegistry()
		cfg.AuthzRegisterer, cfg.DialerRegisterer = h.authzMetrics, h.dialerMetrics
	}
	for _, edit := range s.devEdits {
		edit(&cfg)
	}
	dev, err := devstack.StartDev(ctx, cfg)
	if err != nil {
		t.Fatalf("StartDev: %v", err)
	}
	t.Cleanup(func() {
		for _, f := range s.beforeClose {
			f()
		}
		if err := dev.Close(); err != nil {
			t.Errorf("dev.Close: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(dev.Envoy.StdoutPath())
			t.Logf("Envoy access log:\n%s", b)
		}
	})
	h.dev, h.primary, h.addr = dev, dev.Primary, dev.EdgeAddr.String()
	s.dashboardAddr = dev.PrimaryAddr.String()
}

// warmCookie sends one request with alice's session token in the
// Coder-Session-Token header, as a CLI would, and returns the signed app
// token cookie authz sets on the answer.
func (h *edge) warmCookie(tb testing.TB, appURL string) string {
	tb.Helper()
	session, err := h.primary.SessionToken("alice")
	if err != nil {
		tb.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, appURL, nil)
	req.Header.Set("Coder-Session-Token", session)
	tr := &http.Transport{DialContext: h.dial, TLSClientConfig: h.tls}
	defer tr.CloseIdleConnections()
	res, err := tr.RoundTrip(req)
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s with a session token: status %d", appURL, res.StatusCode)
	}
	for _, c := range res.Cookies() {
		if c.Name == tokens.SignedAppTokenCookie {
			return c.Name + "=" + c.Value
		}
	}
	tb.Fatalf("GET %s: no %s cookie set (Set-Cookie %q)", appURL, tokens.SignedAppTokenCookie, res.Header.Values("Set-Cookie"))
	return ""
}

// clientOpts says what kind of client newClient makes.
type clientOpts struct {
	jar    bool // keep cookies
	follow bool // follow redirects
	conns  int  // idle connections kept per host
}

// newClient is a client of the stack (see dial), its connections closed
// when t ends.
func (h *edge) newClient(t testing.TB, o clientOpts) *http.Client {
	tr := &http.Transport{DialContext: h.dial, TLSClientConfig: h.tls, ForceAttemptHTTP2: h.tls != nil, MaxIdleConnsPerHost: o.conns}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	if o.jar {
		c.Jar, _ = cookiejar.New(nil)
	}
	if !o.follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// newBrowser is a browser with its own cookie jar (and connections).
func (h *edge) newBrowser(t testing.TB) *http.Client {
	return h.newClient(t, clientOpts{jar: true, follow: true})
}

// plainClient follows no redirects and keeps no cookies.
func (h *edge) plainClient(t testing.TB) *http.Client {
	return h.newClient(t, clientOpts{})
}

// httpClient is a keep-alive client with room for conc concurrent
// connections, following no redirects and keeping no cookies.
func (h *edge) httpClient(conc int) *http.Client {
	return h.newClient(h.t, clientOpts{conns: conc})
}

// dialWebsocket opens a websocket through the stack (HTTP/1.1, also over
// TLS) with header.
func (h *edge) dialWebsocket(ctx context.Context, rawURL string, header http.Header) (*websocket.Conn, *http.Response, error) {
	tr := &http.Transport{DialContext: h.dial}
	if h.tls != nil {
		tr.TLSClientConfig = h.tls.Clone()
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return websocket.Dial(ctx, rawURL, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: header})
}

// roundTrip sends one request through h.client; see roundTrip.
func (h *edge) roundTrip(t testing.TB, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	return roundTrip(t, h.client, method, url, header)
}

// roundTrip sends one request through client and reads the whole answer. A
// "Host" entry in header sets the request's Host.
func roundTrip(t testing.TB, client *http.Client, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			if strings.EqualFold(k, "Host") {
				req.Host = v
				continue
			}
			req.Header.Add(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// result is one answer, read whole.
type result struct {
	StatusCode int
	Header     http.Header
	Body       string
}

// get sends a GET with header through h.client.
func (h *edge) get(t testing.TB, rawURL string, header http.Header) (result, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return h.do(t, req)
}

// do sends req through h.client.
func (h *edge) do(t testing.TB, req *http.Request) (result, error) {
	t.Helper()
	res, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return result{StatusCode: res.StatusCode, Header: res.Header, Body: string(b)}, err
}

// primaryFixture is the dev primary serving on loopback as the dashboard
// host, and the proxy's client of it, which reaches it whatever the URL's
// host.
type primaryFixture struct {
	*devprimary.Server
	ts   *httptest.Server
	addr string
	// http dials the primary; client is the proxy's primary client.
	http   *http.Client
	client *primary.Client
}

// startPrimary starts the dev primary with opts (its AccessURL is the
// dashboard's).
func startPrimary(t testing.TB, opts devprimary.Options) *primaryFixture {
	t.Helper()
	opts.AccessURL = &url.URL{Scheme: "http", Host: dashboardHost}
	p, err := devprimary.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f := &primaryFixture{Server: p, ts: httptest.NewServer(p.Handler())}
	t.Cleanup(func() { f.ts.CloseClientConnections(); f.ts.Close(); _ = p.Close() })
	f.addr = f.ts.Listener.Addr().String()
	f.http = &http.Client{Transport: &http.Transport{DialContext: dialTo(f.addr)}}
	f.client, err = primary.New(primary.Options{URL: opts.AccessURL, ProxyToken: p.ProxyToken(), HTTPClient: f.http, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// serveUntilEnd runs serve (a service's Serve) until the test ends, then
// cancels its context and waits up to wait for it to return nil.
func serveUntilEnd(t testing.TB, name string, wait time.Duration, serve func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(wait):
			t.Errorf("%s did not stop", name)
		}
	})
}

// testCert is a self-signed certificate for the access and wildcard hosts:
// its files, for Envoy, and the pool that trusts it, for clients.
func testCert(t testing.TB) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	certFile, keyFile = testutil.SelfSignedCert(t, accessHost, wildcardHost)
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("bad test certificate")
	}
	return certFile, keyFile, roots
}

// loopback listens on a kernel-chosen 127.0.0.1 port.
func loopback(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// dialTo dials addr whatever address it is asked for.
func dialTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
}

// minimalBootstrap is WithMinimalEnvoy's Envoy; %s is the upstream port.
const minimalBootstrap = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: direct
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: direct
          upgrade_configs: [{upgrade_type: websocket}]
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: app}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}
`

// minimalTLSBootstrap is minimalBootstrap for port terminating TLS with
// certFile and keyFile, HTTP/2 by ALPN and RFC 8441 websockets allowed, as
// wsedge's TLS edge does: the baseline for a browser that reaches an https
// edge.
func minimalTLSBootstrap(tb testing.TB, certFile, keyFile, port string) []byte {
	tb.Helper()
	tls := fmt.Sprintf(`    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {filename: %q}
              private_key: {filename: %q}
      filters:
`, certFile, keyFile)
	upgrades := "          upgrade_configs: [{upgrade_type: websocket}]\n"
	b := fmt.Sprintf(minimalBootstrap, port)
	for _, r := range [][2]string{{"    - filters:\n", tls}, {upgrades, upgrades + "          http2_protocol_options: {allow_connect: true}\n"}} {
		if !strings.Contains(b, r[0]) {
			tb.Fatalf("minimalBootstrap has no %q to change", r[0])
		}
		b = strings.Replace(b, r[0], r[1], 1)
	}
	return []byte(b)
}
