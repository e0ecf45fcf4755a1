// Package dialer is wsedge's upstream HTTP server: Envoy routes every
// allowed app request, web terminal, DERP and health probe to it. It
// re-verifies the signed app token that authz handed over in an internal
// header (it never trusts a bare header) or, on Envoy's fast path (no
// ext_authz call), the token cookie Envoy verified — the dialer is that
// path's enforcement point: current keys, this very request, no smuggled
// key, the app response policy; anything it refuses gets authz's answer
// (see fastPathToken) — then reverse-proxies HTTP and
// websockets to workspace agents, or bridges web terminals to the agent's
// reconnecting-PTY port, through an AgentDialer (the tailnet node in
// production, loopback in tests). It records one stats session per
// proxied request or terminal and uploads them to the primary, and answers
// /healthz, /healthz-report, /api/v2/buildinfo and /latency-check the way
// Coder's workspace proxy does.
package dialer

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// Defaults for Options.
const (
	// DefaultDialTimeout and DefaultResponseTimeout together bound how
	// long a request to an agent that has gone away waits for its 502:
	// a new connection fails to dial, a pooled one gets no headers.
	DefaultDialTimeout     = 10 * time.Second
	DefaultResponseTimeout = 10 * time.Second
	DefaultShutdownGrace   = 10 * time.Second
	// upgradeCutWait bounds the wait for cut websockets to unwind.
	upgradeCutWait = 5 * time.Second
)

// AgentDialer opens TCP connections to a port of a workspace agent. The
// tailnet node implements it; tests use loopback listeners.
type AgentDialer interface {
	DialAgent(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error)
}

// ErrInvalidOptions wraps every reason New refuses its options.
var ErrInvalidOptions = errors.New("dialer: invalid options")

// Options configure a Server.
type Options struct {
	// AccessURL is the proxy's public URL; DashboardURL the primary's.
	AccessURL, DashboardURL *url.URL
	// Router classifies requests exactly as authz does.
	Router appurl.Router
	// Verifier checks app tokens.
	Verifier *tokens.Verifier
	// Agents reaches workspace agents.
	Agents AgentDialer
	// Stats receives app usage reports; nil discards them.
	Stats StatsReporter
	// DERP serves /derp and /derp/*; nil answers them with Coder's
	// "DERP is disabled" error.
	DERP http.Handler
	// Health are the checks behind /healthz-report.
	Health []HealthCheck
	// Version is reported by /api/v2/buildinfo.
	Version string
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// DialTimeout bounds dialling an agent; zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for an app's response headers once
	// the request is sent; zero means DefaultResponseTimeout. Bodies
	// (streams, server-sent events) and websockets are not bounded.
	ResponseTimeout time.Duration
	// ShutdownGrace is how long Serve lets in-flight requests and app
	// websockets finish after ctx is cancelled; zero means
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// Registerer additionally receives the dialer's metrics (they are
	// always served by MetricsHandler).
	Registerer prometheus.Registerer
	// Authz, if set, is asked (as Envoy's ext_authz would ask) about a
	// request that came by Envoy's fast path with a token the dialer does
	// not accept, so the browser gets the cold path's answer at once;
	// without it such a request is sent back through Envoy (a redirect).
	Authz AuthzClient
	// StatsFlushInterval is how often app stats are uploaded; zero means
	// StatsFlushInterval (30 s, as Coder's proxy).
	StatsFlushInterval time.Duration
	// TracerProvider, if set, traces requests (continuing Envoy's
	// traceparent), agent dials and terminal set-up; nil: no tracing.
	TracerProvider trace.TracerProvider
	// Limits bound in-flight requests and tailnet dials; zero fields take
	// the defaults.
	Limits Limits
}

// Server is the dialer's HTTP server.
type Server struct {
	accessURL, dashboardURL *url.URL
	router                  appurl.Router
	verifier                *tokens.Verifier
	authz                   AuthzClient
	agents                  AgentDialer
	derp                    http.Handler
	health                  []HealthCheck
	version                 string
	log                     *slog.Logger
	now                     func() time.Time
	dialTimeout             time.Duration
	responseTimeout         time.Duration
	grace                   time.Duration

	metrics    *metrics
	registry   *prometheus.Registry
	admission  *admission
	transports *transportCache
	stats      *StatsCollector

	shuttingDown atomic.Bool
	// closing ends when shutdown begins: terminals close with 1001.
	closing      context.Context
	beginClosing context.CancelFunc
	// upgrades counts hijacked connections (websockets), which
	// http.Server.Shutdown does not wait for.
	upgrades activeSet

	handler http.Handler
	// tracer is nil when tracing is off.
	tracer trace.Tracer
	// proxyLog receives the reverse proxy's own errors (debug level).
	proxyLog *log.Logger
	// appProxy proxies every app request (see appExchange).
	appProxy *httputil.ReverseProxy
	targets  targetCache

	// testPingInterval overrides terminalPingInterval in tests.
	testPingInterval time.Duration
}

// New validates options and builds a Server.
func New(o Options) (*Server, error) {
	switch {
	case o.AccessURL == nil || o.AccessURL.Host == "":
		return nil, fmt.Errorf("%w: AccessURL is required", ErrInvalidOptions)
	case o.DashboardURL == nil || o.DashboardURL.Host == "":
		return nil, fmt.Errorf("%w: DashboardURL is required", ErrInvalidOptions)
	case o.Verifier == nil || o.Verifier.Keys == nil:
		return nil, fmt.Errorf("%w: Verifier with a key source is required", ErrInvalidOptions)
	case o.Agents == nil:
		return nil, fmt.Errorf("%w: Agents is required", ErrInvalidOptions)
	case o.DialTimeout < 0 || o.ResponseTimeout < 0 || o.ShutdownGrace < 0:
		return nil, fmt.Errorf("%w: negative timeout", ErrInvalidOptions)
	}
	limits, err := o.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	dials := limitedDialer{AgentDialer: o.Agents, slots: make(chan struct{}, limits.Dials)}
	s := &Server{
		accessURL:       o.AccessURL,
		dashboardURL:    o.DashboardURL,
		router:          o.Router,
		verifier:        o.Verifier,
		authz:           o.Authz,
		agents:          dials,
		admission:       newAdmission(limits),
		derp:            o.DERP,
		health:          o.Health,
		version:         o.Version,
		log:             o.Logger,
		now:             o.Now,
		dialTimeout:     o.DialTimeout,
		responseTimeout: o.ResponseTimeout,
		grace:           o.ShutdownGrace,
	}
	s.closing, s.beginClosing = context.WithCancel(context.Background())
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.proxyLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.appProxy = s.newAppProxy()
	if s.now == nil {
		s.now = time.Now
	}
	if s.dialTimeout == 0 {
		s.dialTimeout = DefaultDialTimeout
	}
	if s.responseTimeout == 0 {
		s.responseTimeout = DefaultResponseTimeout
	}
	if s.grace == 0 {
		s.grace = DefaultShutdownGrace
	}
	if s.version == "" {
		s.version = "dev"
	}
	s.registry = prometheus.NewRegistry()
	m, err := newMetrics(s.registry, o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("dialer: metrics: %w", err)
	}
	if err := registerInFlight([]prometheus.Registerer{s.registry, o.Registerer}, s.admission, dials); err != nil {
		return nil, fmt.Errorf("dialer: metrics: %w", err)
	}
	s.metrics = m
	if o.TracerProvider != nil {
		s.tracer = o.TracerProvider.Tracer(tracerName)
	}
	s.transports = newTransportCache(s.agents, s.dialTimeout, s.responseTimeout, s.now, m)
	s.transports.tracer = s.tracer
	s.stats = NewStatsCollector(StatsCollectorOptions{
		Reporter:      o.Stats,
		Now:           s.now,
		Logger:        s.log,
		OnFlush:       m.observeFlush,
		FlushInterval: o.StatsFlushInterval,
	})
	var h http.Handler = http.HandlerFunc(s.route)
	if o.TracerProvider != nil {
		h = endAtHeaders(h)
	}
	h = s.instrument(h)
	if o.TracerProvider != nil {
		h = traced(h, o.TracerProvider)
	}
	s.handler = h
	return s, nil
}

// Handler is the dialer's HTTP handler (what Serve serves).
func (s *Server) Handler() http.Handler { return s.handler }

// MetricsHandler serves the dialer's Prometheus metrics; mount it on a
// separate, private port.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})
}

// AgentGone drops the pooled idle connections to an agent the
// coordinator reports gone: they may be dead, and a request sent on one
// would wait for the response timeout instead of dialling afresh.
// Requests in flight are left alone.
func (s *Server) AgentGone(agentID uuid.UUID) {
	s.transports.closeIdleOf(agentID)
}

// Stats is the server's stats collector (for tests and callers that want
// to flush on their own schedule).
func (s *Server) Stats() *StatsCollector { return s.stats }

// Serve serves HTTP/1.1 and cleartext HTTP/2 (h2c, as Envoy speaks to its
// upstreams) on ln until ctx is cancelled, running the stats uploader and
// the transport sweeper alongside. On cancel it stops accepting, marks
// /healthz-report as shutting down, closes web terminals with 1001 (Going
// Away), lets in-flight requests and app websockets run for the shutdown
// grace, then cuts what is left, flushes stats once more and returns.
// It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hardCtx, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	// Idle websockets wait for their clients here instead of in a
	// goroutine each (readinessPoller).
	poller, err := newReadinessPoller()
	if err != nil {
		s.log.Warn("dialer: no readiness poller: each websocket reads its client with a goroutine", "error", err)
	}
	baseCtx := context.WithValue(context.WithValue(hardCtx, cutKey{}, hardCtx), pollerKey{}, poller)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		// Upgraded app sessions outlive their handler: hardCtx cuts them too.
		BaseContext: func(net.Listener) context.Context { return baseCtx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}

	loopCtx, loopCancel := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); s.stats.Run(loopCtx) }()
	go func() { defer loops.Done(); s.transports.sweep(loopCtx) }()
	// The poller outlives the shutdown grace (loopCtx does not): it stops
	// once the websockets are drained or cut.
	pollCtx, pollCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pollCancel()
	if poller != nil {
		loops.Add(1)
		go func() { defer loops.Done(); poller.run(pollCtx) }()
	}

	// The front reads Envoy's connections and answers the common
	// request itself; srv serves the connections it hands over.
	fr := newFront(ln, srv, baseCtx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- fr.serve() }()
	go func() { _ = srv.Serve(fr.handoff) }()

	select {
	case err = <-serveErr:
		// The listener failed: no graceful shutdown to do.
		_ = srv.Close()
		fr.close()
		loopCancel()
		hardCancel()
		pollCancel()
		loops.Wait()
		s.transports.closeIdle()
		return fmt.Errorf("dialer: serve: %w", err)
	case <-ctx.Done():
	}

	s.beginShutdown()
	graceCtx, graceCancel := context.WithTimeout(context.WithoutCancel(ctx), s.grace)
	defer graceCancel()
	frontDone := make(chan error, 1)
	go func() { frontDone <- fr.shutdown(graceCtx) }()
	err = srv.Shutdown(graceCtx)
	if ferr := <-frontDone; err == nil {
		err = ferr
	}
	if err != nil {
		s.log.Warn("dialer shutdown: in-flight requests cut at the deadline", "error", err)
	}
	select {
	case <-s.upgrades.drained():
	case <-graceCtx.Done():
		s.log.Warn("dialer shutdown: websockets cut at the deadline")
	}
	// Cancelling the base context closes every remaining upgraded
	// connection (ReverseProxy watches the request context).
	hardCancel()
	_ = srv.Close()
	fr.close()
	select {
	case <-s.upgrades.drained():
	case <-time.After(upgradeCutWait):
		// A handler (e.g. an injected DERP handler) ignores its request
		// context; do not hang shutdown on it.
		s.log.Error("dialer shutdown: upgraded connections still open after being cut")
	}
	<-serveErr
	loopCancel()
	pollCancel()
	loops.Wait()
	s.transports.closeIdle()
	return nil
}

func (s *Server) beginShutdown() {
	s.shuttingDown.Store(true)
	s.beginClosing()
}
