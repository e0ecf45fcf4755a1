package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/extproc"
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
	// Listener receives Envoy's gRPC calls.
	Listener net.Listener
	// Registerer receives the service's metrics; nil: none.
	Registerer prometheus.Registerer
	// Grace bounds in-flight calls at shutdown.
	Grace  time.Duration
	Logger *slog.Logger
	// KeyRetry is how soon a failed first key fetch is retried (5 s).
	KeyRetry time.Duration
	// Limits bound in-flight Checks and issue calls (zero: defaults).
	Limits authz.Limits
}

// ServeAuthz runs the ext_authz and ext_proc gRPC services until ctx ends. The gRPC
// health status of the Authorization service stays NOT_SERVING until the
// primary's keys have been fetched once, so probes and Envoy health
// checks keep traffic away from a replica that could only refuse it.
func ServeAuthz(ctx context.Context, cfg AuthzConfig) error {
	if cfg.Primary == nil || cfg.Listener == nil {
		return errors.New("authz: Primary and Listener are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	keys := primary.NewKeyCache(cfg.Primary, primary.KeyCacheOptions{Logger: log, Registerer: cfg.Registerer})
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
		},
		Keys:   keys,
		Issuer: PrimaryIssuer{Client: cfg.Primary},
		Logger: log,
		Limits: cfg.Limits,
	})
	if err != nil {
		return fmt.Errorf("authz: %w", err)
	}
	owners := primary.NewOwnerCache(cfg.Primary, primary.OwnerCacheOptions{})
	proc, err := extproc.New(extproc.Options{
		WildcardHostname: cfg.WildcardHostname,
		Owners:           owners,
		Logger:           log,
		Registerer:       cfg.Registerer,
	})
	if err != nil {
		return fmt.Errorf("extproc: %w", err)
	}
	// One gRPC server, both services: Envoy's ext_proc filters on app
	// routes talk to the same address as ext_authz.
	srv := authz.NewServer(svc, cfg.Registerer, authz.WithExtProc(proc))
	srv.Health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	srv.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if !primeKeys(ctx, keys, orDefault(cfg.KeyRetry, 5*time.Second), log) {
			return
		}
		srv.Health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		srv.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		_ = keys.Run(ctx)
	})
	log.Info("authz listening", "addr", cfg.Listener.Addr().String(), "primary", cfg.Primary.URL().String(),
		"access_url", cfg.AccessURL.String(), "wildcard", cfg.WildcardHostname)
	err = srv.Serve(ctx, cfg.Listener, cfg.Grace)
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
