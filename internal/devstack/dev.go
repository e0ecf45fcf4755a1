package devstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/trace"
	"tailscale.com/tailcfg"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/derp"
	devagent "github.com/wsedge/wsedge/dev/agent"
	devprimary "github.com/wsedge/wsedge/dev/primary"
	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/buildinfo"
	"github.com/wsedge/wsedge/internal/envoyrun"
	"github.com/wsedge/wsedge/internal/stack"
	"github.com/wsedge/wsedge/internal/tracing"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tailnet/tsnode"
	"github.com/wsedge/wsedge/tokens"
)

// DevConfig describes a whole wsedge deployment on one machine: the dev
// primary, real Envoy, authz (with ext_proc), the dialer and a dev agent
// per connected agent of the catalog, all on loopback.
type DevConfig struct {
	// Catalog is the dev primary's world; nil means the demo.
	Catalog *devprimary.Catalog
	// DashboardURL, AccessURL and WildcardHostname are what browsers use.
	DashboardURL, AccessURL *url.URL
	WildcardHostname        string
	// PrimaryListen and EdgeListen are where the dev primary and Envoy
	// listen (port 0: any).
	PrimaryListen, EdgeListen netip.AddrPort
	// TLSCertFile and TLSKeyFile make Envoy terminate TLS.
	TLSCertFile, TLSKeyFile string
	// EnvoyBinary runs Envoy.
	EnvoyBinary string
	// Dir receives Envoy's files and logs.
	Dir string
	// Logger receives the services' logs.
	Logger *slog.Logger
	// Progress, if set, is told about each start-up step.
	Progress func(step string)
	// StatsFlushInterval overrides the dialer's 30 s app-stats upload.
	StatsFlushInterval time.Duration
	// DialTimeout bounds the dialer's dial to an agent (default 10 s).
	DialTimeout time.Duration
	// AuthzRegisterer and DialerRegisterer receive the services' metrics.
	AuthzRegisterer, DialerRegisterer prometheus.Registerer
	// PrimaryListener, if set, is where the dev primary serves
	// (PrimaryListen is then ignored); PrimaryMiddleware, if set, wraps
	// its handler. Fault tests use them to take the primary away, slow it
	// down or cut its connections.
	PrimaryListener   net.Listener
	PrimaryMiddleware func(http.Handler) http.Handler
	// OTLPEndpoint, if set, is host:port of an OTLP/gRPC collector
	// (plain gRPC): Envoy's tracer (--otlp-endpoint, every request
	// sampled), authz (service wsedge-authz, its primary client included)
	// and the dialer (wsedge-dialer) send their spans there, exported
	// every 100 ms. Empty: no tracing, as in production by default.
	OTLPEndpoint string
	// AuthzLimits and DialerLimits bound the services' in-flight work
	// (zero: the defaults); Envoy, if set, adjusts Envoy's config (its
	// overload limits, say) before it starts.
	AuthzLimits  authz.Limits
	DialerLimits dialer.Limits
	Envoy        func(*envoy.Config)
	// ServeElsewhere, if set, runs authz and the dialer instead of this
	// process: called with ServiceAuthz or ServiceDialer, the listener
	// Envoy sends the service's traffic to, and what the service needs
	// (ServiceSpec, which ServeService turns back into the service), it
	// must serve until ctx ends. Benchmarks use it to run each service in
	// a process of its own, so that CPU time and memory are its own.
	ServeElsewhere func(ctx context.Context, service string, ln net.Listener, spec ServiceSpec) error
	// KeyRefresh overrides how often authz and the dialer refresh the
	// primary's keys (default 10 min).
	KeyRefresh time.Duration
	// NoFastPath generates the edge without Envoy's fast path (every app
	// request meets ext_authz), as `envoy-config --fast-path=false`.
	NoFastPath bool
}

// Dev is a running DevConfig.
type Dev struct {
	Primary *devprimary.Server
	Envoy   *envoyrun.Process
	// EdgeAddr is Envoy's bound listener; PrimaryAddr the dev primary's;
	// DialerAddr the dialer's (what Envoy forwards allowed traffic to).
	EdgeAddr, PrimaryAddr, DialerAddr netip.AddrPort
	// Agents are the agents started, by ID.
	Agents []uuid.UUID
	// agentStops stop one agent each (StopAgent); agentVanish take one
	// away without a goodbye (VanishAgent).
	agentStops  map[uuid.UUID]func()
	agentVanish map[uuid.UUID]func()

	cfg    DevConfig
	w      wiring
	cancel context.CancelFunc
	log    *slog.Logger
	// services (authz, dialer, agents) stop on cancel and are waited for
	// before the servers they talk to (primary, DERP, Envoy) go away.
	services sync.WaitGroup
	servers  sync.WaitGroup
	mu       sync.Mutex
	errs     []error
	stop     []func()
	// faults lets tests stop and start single services (devfaults.go).
	faults devFaults
	// derpCert is the dev relay's self-signed certificate.
	derpCert *x509.Certificate
}

// wiring is what one start-up step hands the next.
type wiring struct {
	httpClient, wsClient *http.Client
	roots                *x509.CertPool
	derpMap              func() *tailcfg.DERPMap
	client               *primary.Client
	authzLn, dialerLn    net.Listener
	// authzTracing and dialerTracing are nil without OTLPEndpoint.
	authzTracing, dialerTracing trace.TracerProvider
	// jwksLn is authz's internal JWKS listener until authz first takes
	// it; jwksAddr is where a restarted authz listens again.
	jwksLn   net.Listener
	jwksAddr string
}

// StartDev starts everything and returns once a request has gone through
// the whole path (Envoy → authz → dialer → tailnet → agent). Close stops it
// all. On failure the error names the step that did not come up.
func StartDev(ctx context.Context, cfg DevConfig) (_ *Dev, err error) {
	cfg = cfg.withDefaults()
	runCtx, cancel := context.WithCancel(context.Background())
	d := &Dev{cancel: cancel, log: cfg.Logger, cfg: cfg}
	d.faults.runCtx = runCtx
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	steps := []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{"DERP relay", d.startRelay},
		{"dev primary", d.startPrimary},
		{"Envoy", d.startEnvoy},
		{"authz", d.startAuthz},
		{"dialer and its tailnet node", d.startDialer},
		{"dev agents", d.startAgents},
		{"first request through Envoy, authz, the dialer and the tailnet", d.selfCheck},
	}
	for _, step := range steps {
		cfg.Progress(step.name)
		if err := step.run(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	return d, nil
}

func (cfg DevConfig) withDefaults() DevConfig {
	if cfg.Catalog == nil {
		cfg.Catalog = devprimary.DemoCatalog()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string) {}
	}
	return cfg
}

// startRelay starts the primary's embedded DERP region and a STUN server:
// upstream tailscale's DERP client only speaks TLS, so the relay gets a
// self-signed certificate that the dev nodes trust. It also makes the
// in-process HTTP clients (primary client, coordination, the primary's
// health poller), which reach the dev primary and Envoy by their public
// hostnames without DNS: browsers resolve *.localhost to loopback by
// themselves, Go does not.
func (d *Dev) startRelay(context.Context) error {
	d.w.httpClient, d.w.wsClient = d.routedClients()
	roots, derpAddr, err := d.startDERP(d.log)
	if err != nil {
		return err
	}
	stunPort, err := d.startSTUN()
	if err != nil {
		return fmt.Errorf("STUN: %w", err)
	}
	d.w.roots = roots
	d.w.derpMap = func() *tailcfg.DERPMap {
		return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {
			RegionID: 1, RegionCode: "dev", RegionName: "wsedge dev",
			Nodes: []*tailcfg.DERPNode{{Name: "1a", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", IPv6: "none", DERPPort: int(derpAddr.Port()), STUNPort: stunPort}},
		}}}
	}
	return nil
}

// startPrimary starts the coderd stand-in and the primary client that
// authz and the dialer share.
func (d *Dev) startPrimary(context.Context) error {
	cfg := d.cfg
	dev, err := devprimary.New(devprimary.Options{
		Catalog:    cfg.Catalog,
		AccessURL:  cfg.DashboardURL,
		DERPMap:    d.w.derpMap,
		HTTPClient: d.w.httpClient,
		Logger:     d.log.With("component", "devprimary"),
	})
	if err != nil {
		return err
	}
	d.Primary = dev
	d.onStop(func() { _ = dev.Close() })
	pl := cfg.PrimaryListener
	if pl == nil {
		if pl, err = net.Listen("tcp", cfg.PrimaryListen.String()); err != nil {
			return err
		}
	}
	d.PrimaryAddr = netip.MustParseAddrPort(pl.Addr().String())
	var primaryHandler http.Handler = dev.Handler()
	if cfg.PrimaryMiddleware != nil {
		primaryHandler = cfg.PrimaryMiddleware(primaryHandler)
	}
	d.serveHTTP("dev primary", pl, primaryHandler)
	if err := d.startTracing(); err != nil {
		return err
	}
	// authz and the dialer share this client (in production each has its
	// own): its spans, the dialer's /healthz-report calls included, are
	// reported as wsedge-authz's.
	d.w.client, err = primary.New(primary.Options{URL: cfg.DashboardURL, ProxyToken: dev.ProxyToken(), HTTPClient: d.w.httpClient, Timeout: 10 * time.Second, Logger: d.log, TracerProvider: d.w.authzTracing})
	return err
}

// startTracing builds the tracer providers of authz and the dialer when
// the config names a collector. They are shut down (flushing the last
// spans) after the services have stopped.
func (d *Dev) startTracing() error {
	if d.cfg.OTLPEndpoint == "" {
		return nil
	}
	for _, svc := range []struct {
		name string
		into *trace.TracerProvider
	}{{"wsedge-authz", &d.w.authzTracing}, {"wsedge-dialer", &d.w.dialerTracing}} {
		tp, err := tracing.New(context.Background(), tracing.Options{
			Service:      svc.name,
			Version:      buildinfo.Version(),
			Exporter:     []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(d.cfg.OTLPEndpoint), otlptracegrpc.WithInsecure()},
			BatchTimeout: 100 * time.Millisecond,
		})
		if err != nil {
			return err
		}
		*svc.into = tp
		d.onStop(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = tp.Shutdown(ctx)
		})
	}
	return nil
}

// startEnvoy reserves the addresses of authz and the dialer (Envoy's static
// clusters point at them, and fault tests restart the services there) and
// starts real Envoy with the generated bootstrap.
func (d *Dev) startEnvoy(ctx context.Context) error {
	cfg := d.cfg
	var err error
	if d.w.authzLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	if d.w.dialerLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	if d.w.jwksLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	d.w.jwksAddr = d.w.jwksLn.Addr().String()
	d.onStop(func() {
		if ln := d.takeJWKSListener(); ln != nil {
			_ = ln.Close()
		}
	})
	d.DialerAddr = netip.MustParseAddrPort(d.w.dialerLn.Addr().String())
	ecfg := envoy.DefaultConfig()
	ecfg.FastPath = !cfg.NoFastPath
	ecfg.AuthzJWKSAddr = d.w.jwksAddr
	ecfg.ListenAddr = cfg.EdgeListen
	ecfg.AdminAddr = netip.MustParseAddrPort("127.0.0.1:0")
	ecfg.AccessURLHost = cfg.AccessURL.Host
	ecfg.WildcardHostname = cfg.WildcardHostname
	ecfg.DashboardURL = cfg.DashboardURL.String()
	ecfg.AuthzAddr = d.w.authzLn.Addr().String()
	ecfg.DialerAddr = d.w.dialerLn.Addr().String()
	ecfg.TLSCertFile, ecfg.TLSKeyFile = cfg.TLSCertFile, cfg.TLSKeyFile
	ecfg.Tracing.OTLPEndpoint = cfg.OTLPEndpoint
	if cfg.Envoy != nil {
		cfg.Envoy(&ecfg)
	}
	bootstrap, err := envoy.YAML(ecfg)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ep, err := envoyrun.Start(ctx, envoyrun.Options{Binary: cfg.EnvoyBinary, Bootstrap: bootstrap, Dir: cfg.Dir})
	if err != nil {
		return err
	}
	d.Envoy = ep
	d.onStop(ep.Stop)
	d.EdgeAddr, err = ep.ListenerAddr(ctx, envoy.ListenerName)
	return err
}

// startAuthz runs authz (ext_authz and ext_proc) as production runs it,
// in this process or, with DevConfig.ServeElsewhere, in another one.
func (d *Dev) startAuthz(context.Context) error {
	d.faults.authz = &service{name: "authz", addr: d.w.authzLn.Addr().String(), serve: func(ctx context.Context, ln net.Listener) error {
		jwks := d.takeJWKSListener()
		if jwks == nil { // a restart: listen again where Envoy fetches
			var err error
			if jwks, err = net.Listen("tcp", d.w.jwksAddr); err != nil {
				return fmt.Errorf("authz jwks: %w", err)
			}
		}
		if d.cfg.ServeElsewhere != nil {
			// The other process listens for the JWKS itself, where
			// Envoy fetches it (ServiceSpec.JWKSAddr).
			_ = jwks.Close()
			return d.cfg.ServeElsewhere(ctx, ServiceAuthz, ln, d.serviceSpec())
		}
		return stack.ServeAuthz(ctx, authzConfig(d.cfg, d.w.client, ln, jwks, d.w.authzTracing, d.log))
	}}
	d.startService(d.faults.authz, d.w.authzLn)
	return nil
}

// authzConfig is how a Dev runs authz.
func authzConfig(cfg DevConfig, client *primary.Client, ln, jwks net.Listener, tp trace.TracerProvider, log *slog.Logger) stack.AuthzConfig {
	return stack.AuthzConfig{
		Primary: client, AccessURL: cfg.AccessURL, WildcardHostname: cfg.WildcardHostname,
		Cookies:  tokens.CookieConfig{Secure: cfg.AccessURL.Scheme == "https", SameSite: http.SameSiteLaxMode},
		Listener: ln, Grace: 2 * time.Second, Logger: log.With("component", "authz"), KeyRetry: 200 * time.Millisecond,
		Registerer: cfg.AuthzRegisterer, JWKSListener: jwks, KeyRefresh: cfg.KeyRefresh, TracerProvider: tp, Limits: cfg.AuthzLimits,
		Version: buildinfo.Version(),
	}
}

// takeJWKSListener hands the reserved JWKS listener to authz's first
// start (nil afterwards); at Close an untaken one is closed.
func (d *Dev) takeJWKSListener() net.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	ln := d.w.jwksLn
	d.w.jwksLn = nil
	return ln
}

// startDialer runs the dialer and its tailnet node as production runs them,
// trusting the dev relay's certificate and advertising loopback only, in
// this process or, with DevConfig.ServeElsewhere, in another one.
func (d *Dev) startDialer(context.Context) error {
	d.faults.dialer = &service{name: "dialer", addr: d.w.dialerLn.Addr().String(), serve: func(ctx context.Context, ln net.Listener) error {
		if d.cfg.ServeElsewhere != nil {
			return d.cfg.ServeElsewhere(ctx, ServiceDialer, ln, d.serviceSpec())
		}
		return stack.ServeDialer(ctx, dialerConfig(d.cfg, &d.w, d.Primary.ProxyToken(), d.w.authzLn.Addr().String(), ln, d.log))
	}}
	d.startService(d.faults.dialer, d.w.dialerLn)
	return nil
}

// dialerConfig is how a Dev runs the dialer.
func dialerConfig(cfg DevConfig, w *wiring, proxyToken, authzAddr string, ln net.Listener, log *slog.Logger) stack.DialerConfig {
	host, _ := os.Hostname()
	return stack.DialerConfig{
		Primary: w.client, ProxyToken: proxyToken,
		AccessURL: cfg.AccessURL, WildcardHostname: cfg.WildcardHostname,
		Hostname: host, Version: buildinfo.Version(),
		Listener: ln, Grace: 2 * time.Second, Logger: log.With("component", "dialer"),
		Tailnet:              stack.TailnetConfig{LoopbackOnly: true, ExtraRootCAs: w.roots},
		CoordinateHTTPClient: w.wsClient,
		StatsFlushInterval:   cfg.StatsFlushInterval,
		Registerer:           cfg.DialerRegisterer,
		AuthzAddr:            authzAddr,
		DialTimeout:          cfg.DialTimeout,
		KeyRefresh:           cfg.KeyRefresh,
		TracerProvider:       w.dialerTracing,
		Limits:               cfg.DialerLimits,
	}
}

// startAgents starts an agent stand-in for every connected agent of the
// catalog, each on its own tailnet node.
func (d *Dev) startAgents(context.Context) error {
	runCtx := d.faults.runCtx
	d.faults.startAgent = func(a devprimary.Agent) error { return d.startAgent(runCtx, d.cfg, a, d.w.roots, d.w.wsClient, d.log) }
	d.faults.catalog = d.cfg.Catalog
	for _, w := range d.cfg.Catalog.Workspaces {
		for _, a := range w.Agents {
			if !a.Connected {
				continue
			}
			if err := d.faults.startAgent(a); err != nil {
				return fmt.Errorf("%s: %w", a.Name, err)
			}
		}
	}
	return nil
}

// routedClients are an HTTP client (30 s timeout) and a websocket client
// that reach the dev primary and Envoy by their public hostnames (route).
func (d *Dev) routedClients() (httpClient, wsClient *http.Client) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, d.route(d.cfg, addr))
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 30 * time.Second},
		&http.Client{Transport: &http.Transport{DialContext: dial}}
}

// route maps a public host:port to the loopback address serving it.
func (d *Dev) route(cfg DevConfig, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	host = strings.ToLower(host)
	switch {
	case host == strings.ToLower(cfg.DashboardURL.Hostname()):
		return d.PrimaryAddr.String()
	case host == strings.ToLower(cfg.AccessURL.Hostname()), cfg.WildcardHostname != "" && matchesWildcard(cfg.WildcardHostname, host):
		return d.EdgeAddr.String()
	}
	return addr
}

func matchesWildcard(pattern, host string) bool {
	p, err := appurl.CompileHostnamePattern(pattern)
	if err != nil {
		return false
	}
	_, ok := p.Match(host)
	return ok
}

func (d *Dev) onStop(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stop = append(d.stop, f)
}

// run runs a service until Close; an early exit is recorded as an error.
func (d *Dev) run(name string, f func() error) { d.goRun(&d.services, name, f) }

func (d *Dev) goRun(wg *sync.WaitGroup, name string, f func() error) {
	wg.Go(func() {
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			d.mu.Lock()
			d.errs = append(d.errs, fmt.Errorf("%s: %w", name, err))
			d.mu.Unlock()
		}
	})
}

func (d *Dev) serveHTTP(name string, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
	d.goRun(&d.servers, name, func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	d.onStop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close()
		}
	})
}

func (d *Dev) startDERP(log *slog.Logger) (*x509.CertPool, netip.AddrPort, error) {
	srv, err := derp.New(derp.Options{Logger: log.With("component", "derp")})
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	d.onStop(func() { _ = srv.Close() })
	tlsCfg, err := devagent.SelfSignedTLSConfig(time.Now(), []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	roots := x509.NewCertPool()
	leaf, err := x509.ParseCertificate(tlsCfg.Certificates[0].Certificate[0])
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	roots.AddCert(leaf)
	d.derpCert = leaf
	tlsCfg.NextProtos = []string{"http/1.1"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	d.serveHTTP("DERP relay", tls.NewListener(ln, tlsCfg), srv)
	return roots, netip.MustParseAddrPort(ln.Addr().String()), nil
}

// startSTUN serves STUN on a loopback UDP port for the dev DERP region.
func (d *Dev) startSTUN() (int, error) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	d.goRun(&d.servers, "STUN", func() error { return derp.ServeSTUN(pc) })
	d.onStop(func() { _ = pc.Close() })
	return pc.LocalAddr().(*net.UDPAddr).Port, nil
}

func (d *Dev) startAgent(ctx context.Context, cfg DevConfig, a devprimary.Agent, roots *x509.CertPool, hc *http.Client, log *slog.Logger) error {
	id, err := uuid.Parse(a.ID)
	if err != nil {
		return err
	}
	var apps []devagent.AppSpec
	for _, app := range a.Apps {
		u, err := url.Parse(app.URL)
		if err != nil {
			return err
		}
		port, err := strconv.ParseUint(u.Port(), 10, 16)
		if err != nil {
			return fmt.Errorf("app %s: url %s has no port", app.Slug, app.URL)
		}
		kind := app.DevAgent
		if kind == "" {
			kind = devagent.KindHTTP
			if u.Scheme == "https" {
				kind = devagent.KindHTTPS
			}
		}
		apps = append(apps, devagent.AppSpec{Port: uint16(port), Kind: kind})
	}
	alog := log.With("component", "devagent", "agent", a.Name)
	n, err := devagent.NewTSNode(id, tsnode.Options{Logger: alog, LoopbackOnly: true, ExtraRootCAs: roots})
	if err != nil {
		return err
	}
	d.onStop(func() { _ = n.Close() })
	if !slices.Contains(d.Agents, id) {
		d.Agents = append(d.Agents, id)
	}
	actx, acancel := context.WithCancel(ctx)
	done := make(chan struct{})
	stopAgent := func() {
		acancel()
		<-done
		_ = n.Close()
	}
	// The node goes first: no FIN or RST reaches the dialer, and the
	// coordination stream drops without a disconnect (LOST), as when a
	// workspace's machine dies. The agent's apps then fail: expected.
	var vanished atomic.Bool
	vanish := func() {
		vanished.Store(true)
		_ = n.Close()
		acancel()
		<-done
	}
	d.mu.Lock()
	if d.agentStops == nil {
		d.agentStops, d.agentVanish = map[uuid.UUID]func(){}, map[uuid.UUID]func(){}
	}
	d.agentStops[id], d.agentVanish[id] = stopAgent, vanish
	d.mu.Unlock()
	d.run("dev agent "+a.Name, func() error {
		defer close(done)
		err := devagent.RunTailnet(actx, devagent.TailnetOptions{
			PrimaryURL: cfg.DashboardURL,
			AgentToken: a.AuthToken,
			Node:       devagent.TSNode(n),
			HTTPClient: hc,
			Agent:      devagent.Options{AgentID: id, Apps: apps, Logger: alog, PTY: devagent.PTYOptions{Shell: shell()}},
		})
		if vanished.Load() {
			return nil
		}
		return err
	})
	return nil
}

// StopAgent stops one dev agent as if its workspace went away: its
// coordination stream and tailnet node are gone.
func (d *Dev) StopAgent(id uuid.UUID) error {
	return d.takeAgentAway(id, d.agentStops)
}

// VanishAgent takes one dev agent away as if its machine died: its tailnet
// node stops without closing connections, and its coordination stream
// drops without a disconnect. StartAgent brings it back.
func (d *Dev) VanishAgent(id uuid.UUID) error {
	return d.takeAgentAway(id, d.agentVanish)
}

func (d *Dev) takeAgentAway(id uuid.UUID, how map[uuid.UUID]func()) error {
	d.mu.Lock()
	stop, ok := how[id]
	delete(d.agentStops, id)
	delete(d.agentVanish, id)
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("no running dev agent %s", id)
	}
	stop()
	return nil
}

func shell() string {
	if s := os.Getenv("SHELL"); s != "" {
		return s
	}
	return "/bin/sh"
}

// selfCheck sends one request for the first app of the first connected
// agent through Envoy with its owner's session token, retrying until the
// whole path answers 200 or a minute has passed.
func (d *Dev) selfCheck(ctx context.Context) error {
	cfg := d.cfg
	target, owner, ok := firstApp(cfg.Catalog)
	if !ok {
		return nil
	}
	session, err := d.Primary.SessionToken(owner)
	if err != nil {
		return err
	}
	u := *cfg.AccessURL
	u.Path = target
	edge := d.EdgeAddr.String()
	hc := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, edge)
			},
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // our own self-signed edge on loopback
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       15 * time.Second,
	}
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		if err := d.Err(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		req.Header.Set("Coder-Session-Token", session)
		res, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("status %d: %s", res.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("the whole path did not answer within a minute (GET %s: %s); Envoy log: %s", u.String(), last, filepath.Join(cfg.Dir, "envoy.log"))
}

// firstApp is the path-app base path of the first app of the first
// connected agent, and its workspace owner.
func firstApp(c *devprimary.Catalog) (path, owner string, ok bool) {
	for _, w := range c.Workspaces {
		for _, a := range w.Agents {
			if a.Connected && len(a.Apps) > 0 {
				return fmt.Sprintf("/@%s/%s.%s/apps/%s/", w.Owner, w.Name, a.Name, a.Apps[0].Slug), w.Owner, true
			}
		}
	}
	return "", "", false
}

// Err is the first failure of a service that stopped on its own.
func (d *Dev) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return errors.Join(d.errs...)
}

// Close stops the services (they deregister and say goodbye to the
// coordinator while the primary still listens), then the servers, newest
// first, and waits for all of it.
func (d *Dev) Close() error {
	d.cancel()
	d.services.Wait()
	d.mu.Lock()
	stops := d.stop
	d.stop = nil
	d.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	d.servers.Wait()
	return d.Err()
}

// WriteSelfSignedCert writes a fresh self-signed certificate for hosts
// (DNS names or IPs) and its key as PEM files in dir, for Envoy's TLS
// termination in the dev setup.
func WriteSelfSignedCert(dir string, hosts ...string) (certFile, keyFile string, err error) {
	var names []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, h)
		}
	}
	cfg, err := devagent.SelfSignedTLSConfig(time.Now(), names, ips)
	if err != nil {
		return "", "", err
	}
	c := cfg.Certificates[0]
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "edge-cert.pem"), filepath.Join(dir, "edge-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
