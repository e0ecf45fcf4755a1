package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/internal/buildinfo"
	"github.com/wsedge/wsedge/internal/stack"
)

// dialerCmd is `wsedge dialer`.
type dialerCmd struct {
	primary   primaryFlags
	app       appFlags
	logs      logFlags
	listen    string
	metrics   string
	derp      bool
	derpOnly  bool
	relay     string
	udpPort   uint
	authzAddr string
	grace     time.Duration
	// dialTimeout and respTimeout bound a dial to an agent and the wait for
	// an app's response headers.
	dialTimeout, respTimeout time.Duration
	limits                   dialer.Limits
}

func (c *dialerCmd) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.listen, "listen", "127.0.0.1:9002", "HTTP listen address for Envoy (HTTP/1.1 and h2c)")
	fs.StringVar(&c.metrics, "metrics-listen", "127.0.0.1:9102", "Prometheus /metrics listen address (empty disables)")
	fs.BoolVar(&c.derp, "derp", true, "serve a DERP relay at /derp and offer this proxy as a DERP region")
	fs.BoolVar(&c.derpOnly, "derp-only", false, "serve only DERP (no apps or terminals); needs --derp")
	fs.StringVar(&c.relay, "relay-address", "", "URL sibling replicas use to mesh DERP with this replica, e.g. http://10.0.0.5:9002 (default: http://<listen address>)")
	fs.UintVar(&c.udpPort, "tailnet-udp-port", 0, "UDP port for WireGuard (0: any)")
	fs.StringVar(&c.authzAddr, "authz-addr", "", "authz gRPC address (as Envoy's --authz-addr), checked for /healthz-report and asked about fast-path requests whose token the dialer refuses, e.g. wsedge-authz:9001 (empty: not checked; such requests are redirected back through Envoy)")
	fs.DurationVar(&c.grace, "shutdown-grace", 15*time.Second, "how long in-flight requests and websockets may take to finish on shutdown")
	fs.IntVar(&c.limits.Requests, "max-requests", dialer.DefaultMaxRequests, "app and terminal requests waiting for their agent's answer, in total; beyond it 503 with Retry-After (warm-path requests may take all but an eighth, kept for requests authz authorized)")
	fs.IntVar(&c.limits.RequestsPerAgent, "max-requests-per-agent", dialer.DefaultMaxRequestsPerAgent, "the same, per workspace agent")
	fs.IntVar(&c.limits.Dials, "max-dials", dialer.DefaultMaxDials, "concurrent tailnet dials to agents; beyond it 503 with Retry-After")
	fs.DurationVar(&c.dialTimeout, "agent-dial-timeout", dialer.DefaultDialTimeout, "how long dialling a workspace agent may take before the request gets a 502")
	fs.DurationVar(&c.respTimeout, "agent-response-timeout", dialer.DefaultResponseTimeout, "how long an app may take to send its response headers before the request gets a 502 (bodies, streams and websockets are not bounded); raise it for apps that hold headers back, e.g. long polling")
	c.primary.register(fs)
	c.app.registerHosts(fs)
	c.logs.register(fs)
}

func (c *dialerCmd) run(ctx context.Context, _, stderr io.Writer) error {
	if c.derpOnly && !c.derp {
		return errors.New("--derp-only needs --derp")
	}
	if c.dialTimeout <= 0 || c.respTimeout <= 0 {
		return errors.New("--agent-dial-timeout and --agent-response-timeout must be positive")
	}
	if c.udpPort > 65535 {
		return fmt.Errorf("--tailnet-udp-port %d is not a port", c.udpPort)
	}
	svc, err := openService(ctx, stderr, "wsedge-dialer", &c.logs, &c.primary, &c.app)
	if err != nil {
		return err
	}
	defer svc.close()
	log, client, accessURL, tp := svc.log, svc.client, svc.accessURL, svc.tp
	ln, reg, stopMetrics, err := listenWithMetrics(c.listen, c.metrics, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	relayAddr := c.relay
	if relayAddr == "" {
		relayAddr = "http://" + ln.Addr().String()
	}
	if u, err := url.Parse(relayAddr); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		_ = ln.Close()
		return fmt.Errorf("--relay-address %q: want an http(s) URL", relayAddr)
	}
	host, _ := os.Hostname()
	return stack.ServeDialer(ctx, stack.DialerConfig{
		Primary:          client,
		ProxyToken:       c.primary.proxyToken,
		AccessURL:        accessURL,
		WildcardHostname: c.app.wildcardHostname,
		DERPEnabled:      c.derp,
		DERPOnly:         c.derpOnly,
		RelayAddress:     relayAddr,
		Hostname:         host,
		Version:          buildinfo.Version(),
		Listener:         ln,
		Registerer:       reg,
		Grace:            c.grace,
		Logger:           log,
		TracerProvider:   tp,
		Limits:           c.limits,
		Tailnet:          stack.TailnetConfig{ListenPort: uint16(c.udpPort)},
		AuthzAddr:        c.authzAddr,
		DialTimeout:      c.dialTimeout,
		ResponseTimeout:  c.respTimeout,
	})
}
