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
	// DialTimeout bounds dialling an agent (default 15 s).
	DialTimeout time.Duration
	// AuthzAddr, if set, is checked with the gRPC health protocol for
	// /healthz-report: the dialer is useless to browsers when Envoy's
	// authz is down.
	AuthzAddr string
	// Limits bound in-flight requests and tailnet dials (zero: defaults).
	Limits dialer.Limits
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

// ServeDialer runs the dialer until ctx ends: it checks the primary,
// registers (the first registration must succeed), joins the tailnet
// through the primary's coordinator, serves app traffic, terminals, DERP
// and health, re-registers every 5 s, and on shutdown drains, deregisters
// and leaves the tailnet.
func ServeDialer(ctx context.Context, cfg DialerConfig) error {
	if cfg.Primary == nil || cfg.Listener == nil || cfg.AccessURL == nil {
		return errors.New("dialer: Primary, AccessURL and Listener are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}

	bi, err := cfg.Primary.BuildInfo(ctx)
	if err != nil {
		return fmt.Errorf("dialer: fetch the primary's build info: %w", err)
	}
	if bi.WorkspaceProxy {
		return fmt.Errorf("dialer: %s is a workspace proxy, not a Coder primary", cfg.Primary.URL())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	keys := primary.NewKeyCache(cfg.Primary, primary.KeyCacheOptions{Logger: log, Registerer: cfg.Registerer})
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
		return fmt.Errorf("dialer: register with the primary: %w", err)
	}
	log.Info("registered with the primary", "replica_id", registrar.ReplicaID(), "derp_region_id", reg.DERPRegionID, "siblings", len(reg.SiblingReplicas))
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		if err := registrar.Deregister(dctx); err != nil {
			log.Warn("deregister", "error", err)
		}
	}()

	var derpHandler http.Handler
	if cfg.DERPEnabled {
		d, err := derp.New(derp.Options{Logger: log, MeshKey: reg.DERPMeshKey, MeshTLSConfig: cfg.MeshTLSConfig})
		if err != nil {
			return fmt.Errorf("dialer: derp: %w", err)
		}
		defer d.Close()
		mesh.Store(d)
		setSiblings(reg)
		registerCollectors(cfg.Registerer, log, d.Collector())
		derpHandler = d
	}
	wg.Go(func() { _ = registrar.Run(ctx) })

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
		return fmt.Errorf("dialer: tailnet node: %w", err)
	}
	defer node.Close()
	registerCollectors(cfg.Registerer, log, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "wsedge_tailnet_dial_handshake_retries_total",
		Help: "TCP handshakes to agents abandoned without an answer and retried from a new source port (a SYN lost to the agent's TIME-WAIT, or a lossy path).",
	}, func() float64 { return float64(node.DialRetries()) }))
	coord, err := coordinate.New(ctx, coordinate.Options{
		URL:        cfg.Primary.URL(),
		ProxyToken: cfg.ProxyToken,
		Node:       node,
		Logger:     log,
		HTTPClient: cfg.CoordinateHTTPClient,
	})
	if err != nil {
		return fmt.Errorf("dialer: coordination: %w", err)
	}
	defer coord.Close()
	registerCollectors(cfg.Registerer, log, coord.Collector())

	router, err := appurl.NewRouter(cfg.AccessURL, cfg.Primary.URL(), cfg.WildcardHostname)
	if err != nil {
		return fmt.Errorf("dialer: %w", err)
	}
	srv, err := dialer.New(dialer.Options{
		AccessURL:          cfg.AccessURL,
		DashboardURL:       cfg.Primary.URL(),
		Router:             router,
		Verifier:           &tokens.Verifier{Keys: keys},
		Agents:             tailnet.Dialer{Tunnels: coord, Node: node},
		Stats:              cfg.Primary, // uploads to app-stats itself
		DERP:               derpHandler,
		Health:             append(healthChecks(cfg, registrar, coord), meshHealth{&meshErr}),
		DialTimeout:        cfg.DialTimeout,
		Version:            cfg.Version,
		Logger:             log,
		ShutdownGrace:      cfg.Grace,
		Registerer:         cfg.Registerer,
		StatsFlushInterval: cfg.StatsFlushInterval,
		Limits:             cfg.Limits,
	})
	if err != nil {
		return fmt.Errorf("dialer: %w", err)
	}
	log.Info("dialer listening", "addr", cfg.Listener.Addr().String(), "access_url", cfg.AccessURL.String(), "derp", cfg.DERPEnabled)
	return srv.Serve(ctx, cfg.Listener)
}
