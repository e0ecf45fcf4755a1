package stack

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/extproc"
	"github.com/wsedge/wsedge/internal/tracing"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tokens"
)

// AuthzConfig is what ServeAuthz needs.
type AuthzConfig struct {
	// Primary is the client for the Coder primary; its URL is the
	// dashboard URL.
	Primary          *primary.Client
	AccessURL        *url.URL
	WildcardHostname string
	PathAppsDisabled bool
	Cookies          tokens.CookieConfig
	TrustedProxies   []netip.Prefix
	XFFTrustedHops   int
	// Version is the build version authz's answers report (Coder's
	// X-Coder-Build-Version); empty: "dev".
	Version string
	// Listener receives Envoy's gRPC calls.
	Listener net.Listener
	// JWKSListener, if set, serves the app-token keys as a JWKS for
	// Envoy's fast path (authz.JWKSHandler). It holds the signing
	// secrets: only Envoy may reach it, never the edge.
	JWKSListener net.Listener
	// Registerer receives the service's metrics; nil: none.
	Registerer prometheus.Registerer
	// Grace bounds in-flight calls at shutdown.
	Grace  time.Duration
	Logger *slog.Logger
	// KeyRetry is how soon a failed first key fetch is retried (5 s).
	KeyRetry time.Duration
	// TracerProvider, if set, traces Checks and ext_proc streams
	// (continuing Envoy's trace) and their steps; the Primary client is
	// traced by its own option. nil: no tracing.
	TracerProvider trace.TracerProvider
	// Limits bound in-flight Checks and issue calls (zero: defaults).
	Limits authz.Limits
	// KeyRefresh overrides the 10 min refresh of the primary's keys
	// (tests: a withdrawn key).
	KeyRefresh time.Duration
}

// ServeAuthz runs the ext_authz and ext_proc gRPC services until ctx ends. The gRPC
// health status of the Authorization service stays NOT_SERVING until the
// primary's keys have been fetched once, so probes and Envoy health
// checks keep traffic away from a replica that could only refuse it.
func ServeAuthz(ctx context.Context, cfg AuthzConfig) error {
	if cfg.JWKSListener != nil {
		defer cfg.JWKSListener.Close() // also when returning before serving it
	}
	if cfg.Primary == nil || cfg.Listener == nil {
		return errors.New("ServeAuthz needs Primary and Listener")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	keys := primary.NewKeyCache(cfg.Primary, primary.KeyCacheOptions{Logger: log, Registerer: cfg.Registerer, RefreshInterval: cfg.KeyRefresh})
	registerCollectors(cfg.Registerer, log, cfg.Primary.Collector())
	svc, err := authz.New(authz.Options{
		Config: authz.Config{
			AccessURL:        cfg.AccessURL,
			DashboardURL:     cfg.Primary.URL(),
			WildcardHostname: cfg.WildcardHostname,
			PathAppsDisabled: cfg.PathAppsDisabled,
			Cookies:          cfg.Cookies,
			TrustedProxies:   cfg.TrustedProxies,
			XFFTrustedHops:   cfg.XFFTrustedHops,
			Version:          cfg.Version,
		},
		Keys:           keys,
		Issuer:         PrimaryIssuer{Client: cfg.Primary},
		Logger:         log,
		TracerProvider: cfg.TracerProvider,
		Limits:         cfg.Limits,
	})
	if err != nil {
		return err // authz names itself
	}
	owners := primary.NewOwnerCache(cfg.Primary, primary.OwnerCacheOptions{})
	proc, err := extproc.New(extproc.Options{
		WildcardHostname: cfg.WildcardHostname,
		Owners:           owners,
		Logger:           log,
		Registerer:       cfg.Registerer,
	})
	if err != nil {
		return err // extproc names itself
	}
	// One gRPC server, both services: Envoy's ext_proc filters on app
	// routes talk to the same address as ext_authz.
	var traced []grpc.ServerOption
	if cfg.TracerProvider != nil {
		traced = append(traced, tracing.GRPCServer(cfg.TracerProvider))
	}
	srv := newEdgeGRPC(authz.NewAuthorizationServer(svc, cfg.Registerer), proc, traced...)
	srv.setAuthorizationServing(false)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if !primeKeys(ctx, keys, orDefault(cfg.KeyRetry, 5*time.Second), log) {
			return
		}
		srv.setAuthorizationServing(true)
		_ = keys.Run(ctx)
	})
	if cfg.JWKSListener != nil {
		jwks := &http.Server{
			Handler:           authz.JWKSHandler(keys, nil, log),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
		wg.Go(func() {
			<-ctx.Done()
			_ = jwks.Close()
		})
		wg.Go(func() {
			if err := jwks.Serve(cfg.JWKSListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("authz: JWKS listener failed", "error", err)
			}
		})
		log.Info("authz JWKS listening (internal: Envoy only)", "addr", cfg.JWKSListener.Addr().String())
	}
	log.Info("authz listening", "addr", cfg.Listener.Addr().String(), "primary", cfg.Primary.URL().String(),
		"access_url", cfg.AccessURL.String(), "wildcard", cfg.WildcardHostname)
	err = srv.serve(ctx, cfg.Listener, cfg.Grace)
	cancel()
	wg.Wait()
	return err
}

// primeKeys fetches both key features, retrying until it works or ctx
// ends; it reports whether it worked.
func primeKeys(ctx context.Context, keys *primary.KeyCache, retry time.Duration, log *slog.Logger) bool {
	for {
		err := keys.Prime(ctx)
		if err == nil {
			return true
		}
		log.Error("cannot fetch the primary's crypto keys; not serving until they arrive", "error", err, "retry_in", retry)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(retry):
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
