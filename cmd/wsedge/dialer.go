package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/internal/buildinfo"
	"github.com/wsedge/wsedge/internal/stack"
)

func init() {
	register(command{
		name:    "dialer",
		summary: "Run the upstream Envoy forwards allowed app and terminal traffic to: into the tailnet, plus DERP, health and registration.",
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			var (
				pf          primaryFlags
				af          appFlags
				lf          logFlags
				listen      = fs.String("listen", "127.0.0.1:9002", "HTTP listen address for Envoy (HTTP/1.1 and h2c)")
				metricsAddr = fs.String("metrics-listen", "127.0.0.1:9102", "Prometheus /metrics listen address (empty disables)")
				derpOn      = fs.Bool("derp", true, "serve a DERP relay at /derp and offer this proxy as a DERP region")
				derpOnly    = fs.Bool("derp-only", false, "serve only DERP (no apps or terminals); needs --derp")
				relay       = fs.String("relay-address", "", "URL sibling replicas use to mesh DERP with this replica, e.g. http://10.0.0.5:9002 (default: http://<listen address>)")
				udpPort     = fs.Uint("tailnet-udp-port", 0, "UDP port for WireGuard (0: any)")
				authzAddr   = fs.String("authz-addr", "", "authz gRPC address checked (gRPC health) for /healthz-report, e.g. wsedge-authz:9001 (empty: not checked)")
				grace       = fs.Duration("shutdown-grace", 15*time.Second, "how long in-flight requests and websockets may take to finish on shutdown")
				maxReqs     = fs.Int("max-requests", dialer.DefaultMaxRequests, "app and terminal requests waiting for their agent's answer, in total; beyond it 503 with Retry-After")
				maxPerAgent = fs.Int("max-requests-per-agent", dialer.DefaultMaxRequestsPerAgent, "the same, per workspace agent")
				maxDials    = fs.Int("max-dials", dialer.DefaultMaxDials, "concurrent tailnet dials to agents; beyond it 503 with Retry-After")
			)
			pf.register(fs)
			af.registerHosts(fs)
			lf.register(fs)
			return func(ctx context.Context, _ []string) error {
				if *derpOnly && !*derpOn {
					return fmt.Errorf("--derp-only needs --derp")
				}
				if *udpPort > 65535 {
					return fmt.Errorf("--tailnet-udp-port %d is not a port", *udpPort)
				}
				log, client, accessURL, err := openService(&lf, &pf, &af)
				if err != nil {
					return err
				}
				ln, reg, stopMetrics, err := listenWithMetrics(*listen, *metricsAddr, log)
				if err != nil {
					return err
				}
				defer stopMetrics()
				relayAddr := *relay
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
					ProxyToken:       pf.proxyToken,
					AccessURL:        accessURL,
					WildcardHostname: af.wildcardHostname,
					DERPEnabled:      *derpOn,
					DERPOnly:         *derpOnly,
					RelayAddress:     relayAddr,
					Hostname:         host,
					Version:          buildinfo.Version(),
					Listener:         ln,
					Registerer:       reg,
					Grace:            *grace,
					Logger:           log,
					Tailnet:          stack.TailnetConfig{ListenPort: uint16(*udpPort)},
					AuthzAddr:        *authzAddr,
					Limits:           dialer.Limits{Requests: *maxReqs, RequestsPerAgent: *maxPerAgent, Dials: *maxDials},
				})
			}
		},
	})
}
