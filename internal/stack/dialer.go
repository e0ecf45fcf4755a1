package stack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

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
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}

	bi, err := cfg.Primary.BuildInfo(ctx)
	if err != nil {
		return fmt.Errorf("fetch the primary's build info: %w", err)
	}
	if bi.WorkspaceProxy {
		return fmt.Errorf("%s is a workspace proxy, not a Coder primary", cfg.Primary.URL())
	}

	// Every goroutine below stops on ctx; cancel runs before wg.Wait so a
	// return on an error (or a failed listener) does not wait forever.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	keys := primary.NewKeyCache(cfg.Primary, primary.KeyCacheOptions{Logger: log, Registerer: cfg.Registerer, RefreshInterval: cfg.KeyRefresh})
	registerCollectors(cfg.Registerer, log, cfg.Primary.Collector())
	wg.Go(func() {
		if primeKeys(ctx, keys, 5*time.Second, log) {
			_ = keys.Run(ctx)
		}
	})

	// DERP mesh peers follow the sibling replicas of every registration;
	// the DERP server itself needs the mesh key of the first one.
	var mesh atomic.Pointer[derp.Server]
	// meshErr is the last sibling check, also a /healthz-report warning
	// as in Coder's proxy.
	var meshErr atomic.Pointer[string]
	setSiblings := func(resp primary.RegisterResponse) {
		d := mesh.Load()
		if d == nil {
			return
		}
		sibs := make([]derp.Sibling, 0, len(resp.SiblingReplicas))
		for _, r := range resp.SiblingReplicas {
			sibs = append(sibs, derp.Sibling{Hostname: r.Hostname, RelayAddress: r.RelayAddress})
		}
		if err := d.SetSiblings(sibs); err != nil {
			log.Warn("derp mesh peers", "error", err)
		}
	}
	registrar := primary.NewRegistrar(cfg.Primary, primary.RegistrarOptions{
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
		OnRegistered: setSiblings,
		ReplicaError: func() string {
			if d := mesh.Load(); d != nil {
				e := d.CheckPeers(ctx)
				meshErr.Store(&e)
				return e
			}
			return ""
		},
		Logger:     log,
		Registerer: cfg.Registerer,
	})
	reg, err := registrar.Start(ctx)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	log.Info("registered with the primary", "replica_id", registrar.ReplicaID(), "derp_region_id", reg.DERPRegionID, "siblings", len(reg.SiblingReplicas))

	// Shutdown starts by deregistering, as Coder's proxy does: siblings and
	// the primary stop offering this replica before its listener closes
	// and its DERP and app connections drain. Only then is the app server
	// told to stop (serveCtx).
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	reRegistering := make(chan struct{})
	wg.Go(func() {
		defer close(reRegistering)
		_ = registrar.Run(ctx)
	})
	wg.Go(func() {
		defer stopServing()
		<-ctx.Done()
		<-reRegistering // no re-registration may race the deregistration
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), deregisterTimeout)
		defer dcancel()
		if err := registrar.Deregister(dctx); err != nil {
			log.Warn("deregister", "error", err)
		}
	})

	var derpHandler http.Handler
	if cfg.DERPEnabled {
		d, err := derp.New(derp.Options{Logger: log, MeshKey: reg.DERPMeshKey, MeshTLSConfig: cfg.MeshTLSConfig})
		if err != nil {
			return err // derp names itself
		}
		defer d.Close()
		mesh.Store(d)
		setSiblings(reg)
		registerCollectors(cfg.Registerer, log, d.Collector())
		derpHandler = d
	}

	node, err := tsnode.New(tsnode.Options{
		Logger:             log,
		DERPMap:            reg.DERPMap,
		ListenPort:         cfg.Tailnet.ListenPort,
		DERPOnly:           cfg.Tailnet.DERPOnly,
		ForceWebsocketDERP: reg.DERPForceWebSockets,
		LoopbackOnly:       cfg.Tailnet.LoopbackOnly,
		ExtraRootCAs:       cfg.Tailnet.ExtraRootCAs,
	})
	if err != nil {
		return err // tsnode names itself
	}
	defer node.Close()
	registerCollectors(cfg.Registerer, log, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "wsedge_tailnet_dial_handshake_retries_total",
		Help: "TCP handshakes to agents abandoned without an answer and retried from a new source port (a SYN lost to the agent's TIME-WAIT, or a lossy path).",
	}, func() float64 { return float64(node.DialRetries()) }))
	// The app server, once built, drops pooled connections to agents the
	// coordinator reports gone.
	var appServer atomic.Pointer[dialer.Server]
	coord, err := coordinate.New(ctx, coordinate.Options{
		URL:        cfg.Primary.URL(),
		ProxyToken: cfg.ProxyToken,
		Node:       node,
		Logger:     log,
		HTTPClient: cfg.CoordinateHTTPClient,
		AgentGone: func(agentID uuid.UUID) {
			if s := appServer.Load(); s != nil {
				s.AgentGone(agentID)
			}
		},
	})
	if err != nil {
		return err // coordinate names itself
	}
	defer coord.Close()
	registerCollectors(cfg.Registerer, log, coord.Collector())

	router, err := appurl.NewRouter(cfg.AccessURL, cfg.Primary.URL(), cfg.WildcardHostname)
	if err != nil {
		return err // appurl and dialer name themselves
	}
	var authzClient dialer.AuthzClient
	if cfg.AuthzAddr != "" {
		cc, err := grpc.NewClient(cfg.AuthzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("dialer: authz client: %w", err)
		}
		defer cc.Close()
		authzClient = authv3.NewAuthorizationClient(cc)
	}
	srv, err := dialer.New(dialer.Options{
		Authz:              authzClient,
		AccessURL:          cfg.AccessURL,
		DashboardURL:       cfg.Primary.URL(),
		Router:             router,
		Verifier:           &tokens.Verifier{Keys: keys},
		Agents:             tailnet.Dialer{Tunnels: coord, Node: node},
		Stats:              cfg.Primary, // uploads to app-stats itself
		DERP:               derpHandler,
		Health:             append(healthChecks(cfg, registrar, coord), meshHealth{&meshErr}),
		DialTimeout:        cfg.DialTimeout,
		ResponseTimeout:    cfg.ResponseTimeout,
		Version:            cfg.Version,
		Logger:             log,
		ShutdownGrace:      cfg.Grace,
		Registerer:         cfg.Registerer,
		StatsFlushInterval: cfg.StatsFlushInterval,
	})
	if err != nil {
		return err // dialer names itself
	}
	appServer.Store(srv)
	log.Info("dialer listening", "addr", cfg.Listener.Addr().String(), "access_url", cfg.AccessURL.String(), "derp", cfg.DERPEnabled)
	return srv.Serve(serveCtx, cfg.Listener)
}
