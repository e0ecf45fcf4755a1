package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/internal/buildinfo"
	"github.com/wsedge/wsedge/internal/stack"
)

// authzCmd is `wsedge authz`.
type authzCmd struct {
	primary     primaryFlags
	app         appFlags
	logs        logFlags
	listen      string
	metrics     string
	jwks        string
	secure      string
	sameSite    string
	trusted     string
	trustedHops int
	grace       time.Duration
	limits      authz.Limits
}

func (c *authzCmd) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.listen, "listen", "127.0.0.1:9001", "gRPC listen address for Envoy's ext_authz and ext_proc calls")
	fs.StringVar(&c.metrics, "metrics-listen", "127.0.0.1:9101", "Prometheus /metrics listen address (empty disables)")
	fs.StringVar(&c.jwks, "jwks-listen", "127.0.0.1:9003", "internal listen address of the app-token JWKS for Envoy's fast path (envoy-config --authz-jwks-addr); it holds signing secrets: only Envoy may reach it, never route it through the edge (empty disables)")
	fs.StringVar(&c.secure, "secure-cookies", "auto", "mark cookies Secure: auto (when the access URL is https), true or false")
	fs.StringVar(&c.sameSite, "cookie-samesite", "lax", "SameSite of the cookies authz sets: lax, strict, none or default")
	fs.StringVar(&c.trusted, "trusted-proxies", "", "comma-separated CIDRs of peers whose X-Forwarded-Host is believed (normally empty: Envoy is the edge)")
	fs.IntVar(&c.trustedHops, "xff-trusted-hops", 0, "how many right-most X-Forwarded-For entries come from trusted proxies (match Envoy's xff_num_trusted_hops)")
	fs.IntVar(&c.limits.Checks, "max-checks", authz.DefaultMaxChecks, "concurrent Check calls; beyond it a Check is answered 503 with Retry-After")
	fs.IntVar(&c.limits.IssueCalls, "max-issue-calls", authz.DefaultMaxIssueCalls, "concurrent calls to the primary for signed app tokens; beyond it a Check is answered 503 with Retry-After")
	fs.DurationVar(&c.grace, "shutdown-grace", 15*time.Second, "how long in-flight Check calls may take to finish on shutdown")
	c.primary.register(fs)
	c.app.register(fs)
	c.logs.register(fs)
}

func (c *authzCmd) run(ctx context.Context, _, stderr io.Writer) error {
	svc, err := openService(ctx, stderr, "wsedge-authz", &c.logs, &c.primary, &c.app)
	if err != nil {
		return err
	}
	defer svc.close()
	log, client, accessURL, tp := svc.log, svc.client, svc.accessURL, svc.tp
	cookies, err := cookieConfig(c.secure, c.sameSite, accessURL)
	if err != nil {
		return err
	}
	prefixes, err := parsePrefixes(c.trusted)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	ln, reg, stopMetrics, err := listenWithMetrics(c.listen, c.metrics, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	var jwksLn net.Listener
	if c.jwks != "" {
		if jwksLn, err = net.Listen("tcp", c.jwks); err != nil {
			_ = ln.Close()
			return fmt.Errorf("--jwks-listen: %w", err)
		}
	}
	return stack.ServeAuthz(ctx, stack.AuthzConfig{
		Primary:          client,
		AccessURL:        accessURL,
		WildcardHostname: c.app.wildcardHostname,
		PathAppsDisabled: c.app.disablePathApps,
		Cookies:          cookies,
		TrustedProxies:   prefixes,
		XFFTrustedHops:   c.trustedHops,
		Version:          buildinfo.Version(),
		Listener:         ln,
		JWKSListener:     jwksLn,
		Registerer:       reg,
		Grace:            c.grace,
		Logger:           log,
		TracerProvider:   tp,
		Limits:           c.limits,
	})
}
