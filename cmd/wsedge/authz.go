package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/internal/stack"
)

func init() {
	register(command{
		name:    "authz",
		summary: "Run the ext_authz (and ext_proc) gRPC service Envoy asks about every app and terminal request.",
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			var (
				pf          primaryFlags
				af          appFlags
				lf          logFlags
				listen      = fs.String("listen", "127.0.0.1:9001", "gRPC listen address for Envoy's ext_authz and ext_proc calls")
				metricsAddr = fs.String("metrics-listen", "127.0.0.1:9101", "Prometheus /metrics listen address (empty disables)")
				secure      = fs.String("secure-cookies", "auto", "mark cookies Secure: auto (when the access URL is https), true or false")
				sameSite    = fs.String("cookie-samesite", "lax", "SameSite of the cookies authz sets: lax, strict, none or default")
				trusted     = fs.String("trusted-proxies", "", "comma-separated CIDRs of peers whose X-Forwarded-Host is believed (normally empty: Envoy is the edge)")
				trustedHops = fs.Int("xff-trusted-hops", 0, "how many right-most X-Forwarded-For entries come from trusted proxies (match Envoy's xff_num_trusted_hops)")
				grace       = fs.Duration("shutdown-grace", 15*time.Second, "how long in-flight Check calls may take to finish on shutdown")
				maxChecks   = fs.Int("max-checks", authz.DefaultMaxChecks, "concurrent Check calls; beyond it a Check is answered 503 with Retry-After")
				maxIssue    = fs.Int("max-issue-calls", authz.DefaultMaxIssueCalls, "concurrent calls to the primary for signed app tokens; beyond it a Check is answered 503 with Retry-After")
			)
			pf.register(fs)
			af.register(fs)
			lf.register(fs)
			return func(ctx context.Context, _ []string) error {
				log, client, accessURL, err := openService(&lf, &pf, &af)
				if err != nil {
					return err
				}
				cookies, err := cookieConfig(*secure, *sameSite, accessURL)
				if err != nil {
					return err
				}
				prefixes, err := parsePrefixes(*trusted)
				if err != nil {
					return fmt.Errorf("--trusted-proxies: %w", err)
				}
				ln, reg, stopMetrics, err := listenWithMetrics(*listen, *metricsAddr, log)
				if err != nil {
					return err
				}
				defer stopMetrics()
				return stack.ServeAuthz(ctx, stack.AuthzConfig{
					Primary:          client,
					AccessURL:        accessURL,
					WildcardHostname: af.wildcardHostname,
					PathAppsDisabled: af.disablePathApps,
					Cookies:          cookies,
					TrustedProxies:   prefixes,
					XFFTrustedHops:   *trustedHops,
					Listener:         ln,
					Registerer:       reg,
					Grace:            *grace,
					Logger:           log,
					Limits:           authz.Limits{Checks: *maxChecks, IssueCalls: *maxIssue},
				})
			}
		},
	})
}
