package stack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/derp"
	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/coordinate"
	"github.com/wsedge/wsedge/tailnet/tsnode"
	"github.com/wsedge/wsedge/tokens"
)

// DialerConfig is what ServeDialer needs.
type DialerConfig struct {
	// Primary is the client for the Coder primary; ProxyToken is the same
	// token, needed again for the coordination websocket.
	Primary    *primary.Client
	ProxyToken string

	AccessURL        *url.URL
	WildcardHostname string
	// DERPEnabled serves /derp and offers this proxy as a DERP region;
	// DERPOnly serves nothing else.
	DERPEnabled, DERPOnly bool
	// RelayAddress is the URL sibling replicas mesh DERP with (this
	// replica's own address, e.g. http://10.0.0.5:9002).
	RelayAddress string
	// Hostname is reported to the primary (informational).
	Hostname string
	Version  string

	// Listener receives Envoy's traffic (HTTP/1.1 and h2c).
	Listener   net.Listener
	Registerer prometheus.Registerer
	// Grace bounds in-flight requests and websockets at shutdown.
	Grace  time.Duration
	Logger *slog.Logger

	// Tailnet tunes the tailnet node.
	Tailnet TailnetConfig
	// MeshTLSConfig is used to reach sibling replicas' DERP over https.
	MeshTLSConfig *tls.Config
	// CoordinateHTTPClient dials the primary for the coordination
	// websocket; nil means http.DefaultClient.
	CoordinateHTTPClient *http.Client
	// RegisterInterval overrides the 5 s re-registration period (tests).
	RegisterInterval time.Duration
	// StatsFlushInterval overrides the 30 s app-stats upload period.
	StatsFlushInterval time.Duration
	// DialTimeout bounds dialling an agent (default 10 s).
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for an app's response headers
	// (default 10 s); bodies and websockets are not bounded.
	ResponseTimeout time.Duration
	// AuthzAddr, if set, is checked with the gRPC health protocol for
	// /healthz-report (the dialer is useless to browsers when Envoy's
	// authz is down), and asked about fast-path requests whose token the
	// dialer refuses, so they get the cold path's answer at once
	// (dialer.Options.Authz).
	AuthzAddr string
	// TracerProvider, if set, traces requests (continuing Envoy's trace),
	// agent dials and terminal set-up; nil: no tracing.
	TracerProvider trace.TracerProvider
	// Limits bound in-flight requests and tailnet dials (zero: defaults).
	Limits dialer.Limits
	// KeyRefresh overrides the 10 min refresh of the primary's keys
	// (tests: a withdrawn key).
	KeyRefresh time.Duration
}

// TailnetConfig tunes the dialer's tailnet node.
type TailnetConfig struct {
	// ListenPort is the UDP port for WireGuard; 0 picks one.
	ListenPort uint16
	// DERPOnly never uses direct UDP paths.
	DERPOnly bool
	// LoopbackOnly advertises only 127.0.0.1 endpoints (tests, wsedge dev).
	LoopbackOnly bool
	// ExtraRootCAs are trusted for DERP servers' certificates.
	ExtraRootCAs *x509.CertPool
}

// deregisterTimeout bounds the deregistration that starts a shutdown, so
// an unreachable primary delays the drain by at most this long.
const deregisterTimeout = 5 * time.Second

// ServeDialer runs the dialer until ctx ends: it checks the primary,
// registers (the first registration must succeed), joins the tailnet
// through the primary's coordinator, serves app traffic, terminals, DERP
// and health, re-registers every 5 s, and on shutdown deregisters first,
// then drains app and DERP connections and leaves the tailnet.
func ServeDialer(ctx context.Context, cfg DialerConfig) error {
	if cfg.Primary == nil || cfg.Listener == nil || cfg.AccessURL == nil {
		return errors.New("ServeDialer needs Primary, AccessURL and Listener")
	}
	r := &dialerRun{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.Default()
	}

	// 1. The primary must be a Coder primary, not another proxy.
	if err := r.checkPrimary(ctx); err != nil {
		return err
	}
	// Every goroutine below stops on ctx; cancel runs before wg.Wait so a
	// return on an error (or a failed listener) does not wait forever, and
	// what the steps opened closes, newest first, before either.
	defer r.wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer r.closeAll()

	// 2. Keep the primary's app-token keys fresh: every request's token is
	// verified with them.
	r.startKeys(ctx)
	// 3. Register with the primary and keep re-registering; a shutdown
	// deregisters first and only then ends serveCtx.
	serveCtx, err := r.register(ctx)
	if err != nil {
		return err
	}
	// 4. Serve DERP, meshed with the sibling replicas.
	if err := r.startDERP(); err != nil {
		return err
	}
	// 5. Join the tailnet through the primary's coordinator.
	if err := r.joinTailnet(ctx); err != nil {
		return err
	}
	// 6. Serve apps, terminals, DERP and health until the shutdown.
	srv, err := r.appServer()
	if err != nil {
		return err
	}
	r.log.Info("dialer listening", "addr", cfg.Listener.Addr().String(), "access_url", cfg.AccessURL.String(), "derp", cfg.DERPEnabled)
	return srv.Serve(serveCtx, cfg.Listener)
}

// dialerRun is one ServeDialer: what each start-up step hands the next.
type dialerRun struct {
	cfg DialerConfig
	log *slog.Logger
	wg  sync.WaitGroup
	// closers undo the steps, newest first (closeAll).
	closers []func()

	keys      *primary.KeyCache
	registrar *primary.Registrar
	reg       primary.RegisterResponse
	// mesh is the DERP server once it runs; meshErr the last check of the
	// sibling replicas, also a /healthz-report warning as in Coder's proxy.
	mesh    atomic.Pointer[derp.Server]
	meshErr atomic.Pointer[string]
	derp    http.Handler
	node    *tsnode.Node
	coord   *coordinate.Client
	// app is the app server once built: the coordinator's agent-gone
	// callback drops its pooled connections to that agent.
	app atomic.Pointer[dialer.Server]
}

func (r *dialerRun) onClose(f func()) { r.closers = append(r.closers, f) }

func (r *dialerRun) closeAll() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func (r *dialerRun) checkPrimary(ctx context.Context) error {
	bi, err := r.cfg.Primary.BuildInfo(ctx)
	if err != nil {
		return fmt.Errorf("fetch the primary's build info: %w", err)
	}
	if bi.WorkspaceProxy {
		return fmt.Errorf("%s is a workspace proxy, not a Coder primary", r.cfg.Primary.URL())
	}
	return nil
}

func (r *dialerRun) startKeys(ctx context.Context) {
	cfg := r.cfg
	r.keys = primary.NewKeyCache(cfg.Primary, primary.KeyCacheOptions{Logger: r.log, Registerer: cfg.Registerer, RefreshInterval: cfg.KeyRefresh})
	registerCollectors(cfg.Registerer, r.log, cfg.Primary.Collector())
	r.wg.Go(func() {
		if primeKeys(ctx, r.keys, 5*time.Second, r.log) {
			_ = r.keys.Run(ctx)
		}
	})
}

// setSiblings points the DERP mesh at the sibling replicas of a
// registration (the DERP server needs the mesh key of the first one, so
// it starts after it).
func (r *dialerRun) setSiblings(resp primary.RegisterResponse) {
	d := r.mesh.Load()
	if d == nil {
		return
	}
	sibs := make([]derp.Sibling, 0, len(resp.SiblingReplicas))
	for _, s := range resp.SiblingReplicas {
		sibs = append(sibs, derp.Sibling{Hostname: s.Hostname, RelayAddress: s.RelayAddress})
	}
	if err := d.SetSiblings(sibs); err != nil {
		r.log.Warn("derp mesh peers", "error", err)
	}
}

// register registers (the first registration must succeed) and keeps
// re-registering until ctx ends. Shutdown starts by deregistering, as
// Coder's proxy does: siblings and the primary stop offering this replica
// before its listener closes and its DERP and app connections drain. The
// returned context, which the app server serves on, ends only then.
func (r *dialerRun) register(ctx context.Context) (context.Context, error) {
	cfg := r.cfg
	r.registrar = primary.NewRegistrar(cfg.Primary, primary.RegistrarOptions{
		Request: primary.RegisterRequest{
			AccessURL:           cfg.AccessURL.String(),
			WildcardHostname:    cfg.WildcardHostname,
			DerpEnabled:         cfg.DERPEnabled,
			DerpOnly:            cfg.DERPOnly,
			Hostname:            cfg.Hostname,
			ReplicaRelayAddress: cfg.RelayAddress,
			Version:             cfg.Version,
		},
		Interval:     cfg.RegisterInterval,
		OnRegistered: r.setSiblings,
		ReplicaError: func() string {
			if d := r.mesh.Load(); d != nil {
				e := d.CheckPeers(ctx)
				r.meshErr.Store(&e)
				return e
			}
			return ""
		},
		Logger:     r.log,
		Registerer: cfg.Registerer,
	})
	reg, err := r.registrar.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	r.reg = reg
	r.log.Info("registered with the primary", "replica_id", r.registrar.ReplicaID(), "derp_region_id", reg.DERPRegionID, "siblings", len(reg.SiblingReplicas))

	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	r.onClose(stopServing)
	reRegistering := make(chan struct{})
	r.wg.Go(func() {
		defer close(reRegistering)
		_ = r.registrar.Run(ctx)
	})
	r.wg.Go(func() {
		defer stopServing()
		<-ctx.Done()
		<-reRegistering // no re-registration may race the deregistration
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), deregisterTimeout)
		defer dcancel()
		if err := r.registrar.Deregister(dctx); err != nil {
			r.log.Warn("deregister", "error", err)
		}
	})
	return serveCtx, nil
}

func (r *dialerRun) startDERP() error {
	if !r.cfg.DERPEnabled {
		return nil
	}
	d, err := derp.New(derp.Options{Logger: r.log, MeshKey: r.reg.DERPMeshKey, MeshTLSConfig: r.cfg.MeshTLSConfig})
	if err != nil {
		return err // derp names itself
	}
	r.onClose(func() { d.Close() })
	r.mesh.Store(d)
	r.setSiblings(r.reg)
	registerCollectors(r.cfg.Registerer, r.log, d.Collector())
	r.derp = d
	return nil
}

// joinTailnet starts the tailnet node and coordination with the primary.
func (r *dialerRun) joinTailnet(ctx context.Context) error {
	cfg := r.cfg
	node, err := tsnode.New(tsnode.Options{
		Logger:             r.log,
		DERPMap:            r.reg.DERPMap,
		ListenPort:         cfg.Tailnet.ListenPort,
		DERPOnly:           cfg.Tailnet.DERPOnly,
		ForceWebsocketDERP: r.reg.DERPForceWebSockets,
		LoopbackOnly:       cfg.Tailnet.LoopbackOnly,
		ExtraRootCAs:       cfg.Tailnet.ExtraRootCAs,
	})
	if err != nil {
		return err // tsnode names itself
	}
	r.onClose(func() { node.Close() })
	r.node = node
	registerCollectors(cfg.Registerer, r.log, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "wsedge_tailnet_dial_handshake_retries_total",
		Help: "TCP handshakes to agents abandoned without an answer and retried from a new source port (a SYN lost to the agent's TIME-WAIT, or a lossy path).",
	}, func() float64 { return float64(node.DialRetries()) }))
	coord, err := coordinate.New(ctx, coordinate.Options{
		URL:        cfg.Primary.URL(),
		ProxyToken: cfg.ProxyToken,
		Node:       node,
		Logger:     r.log,
		HTTPClient: cfg.CoordinateHTTPClient,
		AgentGone: func(agentID uuid.UUID) {
			if s := r.app.Load(); s != nil {
				s.AgentGone(agentID)
			}
		},
	})
	if err != nil {
		return err // coordinate names itself
	}
	r.onClose(func() { coord.Close() })
	r.coord = coord
	registerCollectors(cfg.Registerer, r.log, coord.Collector())
	return nil
}

// appServer builds the HTTP server Envoy forwards to: token enforcement
// (with authz to ask about fast-path tokens it refuses), the proxy into the
// tailnet, terminals, DERP and health.
func (r *dialerRun) appServer() (*dialer.Server, error) {
	cfg := r.cfg
	router, err := appurl.NewRouter(cfg.AccessURL, cfg.Primary.URL(), cfg.WildcardHostname)
	if err != nil {
		return nil, err // appurl names itself
	}
	var authzClient dialer.AuthzClient
	if cfg.AuthzAddr != "" {
		cc, err := grpc.NewClient(cfg.AuthzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("authz client: %w", err)
		}
		r.onClose(func() { cc.Close() })
		authzClient = authv3.NewAuthorizationClient(cc)
	}
	srv, err := dialer.New(dialer.Options{
		Authz:              authzClient,
		AccessURL:          cfg.AccessURL,
		DashboardURL:       cfg.Primary.URL(),
		Router:             router,
		Verifier:           &tokens.Verifier{Keys: r.keys},
		Agents:             tailnet.Dialer{Tunnels: r.coord, Node: r.node},
		Stats:              cfg.Primary, // uploads to app-stats itself
		DERP:               r.derp,
		Health:             append(healthChecks(cfg, r.registrar, r.coord), meshHealth{&r.meshErr}),
		DialTimeout:        cfg.DialTimeout,
		ResponseTimeout:    cfg.ResponseTimeout,
		Version:            cfg.Version,
		Logger:             r.log,
		ShutdownGrace:      cfg.Grace,
		Registerer:         cfg.Registerer,
		StatsFlushInterval: cfg.StatsFlushInterval,
		TracerProvider:     cfg.TracerProvider,
		Limits:             cfg.Limits,
	})
	if err != nil {
		return nil, err // dialer names itself
	}
	r.app.Store(srv)
	return srv, nil
}
