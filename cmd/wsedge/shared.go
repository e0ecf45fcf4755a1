package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tokens"
)

// primaryFlags say how to reach the Coder primary.
type primaryFlags struct {
	url        string
	proxyToken string
	timeout    time.Duration
}

func (p *primaryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.url, "primary-url", "", "URL of the Coder primary (coderd), e.g. https://coder.example.com (required)")
	fs.StringVar(&p.proxyToken, "proxy-token", "", "the workspace proxy token `coder wsproxy create` printed (<uuid>:<secret>; required; prefer the env var)")
	fs.DurationVar(&p.timeout, "primary-timeout", 10*time.Second, "timeout of one call to the primary")
}

func (p *primaryFlags) parse() (*url.URL, error) {
	if p.url == "" {
		return nil, errors.New("--primary-url is required")
	}
	u, err := url.Parse(p.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--primary-url %q: want an http(s) URL", p.url)
	}
	if p.proxyToken == "" {
		return nil, errors.New("--proxy-token is required")
	}
	return u, nil
}

// appFlags describe the proxy's public face; authz and the dialer share
// them and must be given the same values.
type appFlags struct {
	accessURL        string
	wildcardHostname string
	disablePathApps  bool
}

func (a *appFlags) register(fs *flag.FlagSet) {
	a.registerHosts(fs)
	fs.BoolVar(&a.disablePathApps, "disable-path-apps", false, "refuse path-based apps (/@user/workspace/apps/app/) with Coder's 403 page")
}

// registerHosts registers the access URL and wildcard only (the dialer's
// view: what to register with the primary and how to classify requests).
func (a *appFlags) registerHosts(fs *flag.FlagSet) {
	fs.StringVar(&a.accessURL, "access-url", "", "public URL of this proxy, where path apps and terminals are served, e.g. https://eu.coder.example.com (required)")
	fs.StringVar(&a.wildcardHostname, "wildcard-hostname", "", "wildcard hostname for subdomain apps, e.g. *.apps.eu.coder.example.com or *--apps.example.com (empty disables subdomain apps)")
}

func (a *appFlags) parseAccessURL() (*url.URL, error) {
	return parseAccessURL(a.accessURL)
}

func parseAccessURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("--access-url is required")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--access-url %q: want an http(s) URL without a path", s)
	}
	u.Path = ""
	return u, nil
}

func cookieConfig(secure, sameSite string, accessURL *url.URL) (tokens.CookieConfig, error) {
	var c tokens.CookieConfig
	switch secure {
	case "auto":
		c.Secure = accessURL.Scheme == "https"
	case "true":
		c.Secure = true
	case "false":
	default:
		return c, fmt.Errorf("--secure-cookies %q: want auto, true or false", secure)
	}
	switch strings.ToLower(sameSite) {
	case "lax":
		c.SameSite = http.SameSiteLaxMode
	case "strict":
		c.SameSite = http.SameSiteStrictMode
	case "none":
		c.SameSite = http.SameSiteNoneMode
	case "default", "":
		c.SameSite = http.SameSiteDefaultMode
	default:
		return c, fmt.Errorf("--cookie-samesite %q: want lax, strict, none or default", sameSite)
	}
	return c, nil
}

// parsePrefixes reads a comma-separated list of CIDRs or bare addresses.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// service is what authz and the dialer start from: a logger (to stderr)
// from the log flags, the tracer provider the OTEL_* environment asks for
// (nil: tracing off), the primary client (traced with it) and the access
// URL. close flushes the last spans.
type service struct {
	log       *slog.Logger
	tp        trace.TracerProvider
	client    *primary.Client
	accessURL *url.URL
	close     func()
}

// openService is how authz and the dialer start; name is the service name
// of their spans.
func openService(ctx context.Context, stderr io.Writer, name string, lf *logFlags, pf *primaryFlags, af *appFlags) (*service, error) {
	log, err := lf.logger(stderr)
	if err != nil {
		return nil, err
	}
	primaryURL, err := pf.parse()
	if err != nil {
		return nil, err
	}
	accessURL, err := af.parseAccessURL()
	if err != nil {
		return nil, err
	}
	tp, stopTracing, err := openTracing(ctx, name)
	if err != nil {
		return nil, err
	}
	client, err := primary.New(primary.Options{URL: primaryURL, ProxyToken: pf.proxyToken, Timeout: pf.timeout, Logger: log, TracerProvider: tp})
	if err != nil {
		stopTracing(log)
		return nil, err
	}
	reportTracingErrors(log, name, tp)
	return &service{log: log, tp: tp, client: client, accessURL: accessURL, close: func() { stopTracing(log) }}, nil
}

// listenWithMetrics opens the service's listener and starts /metrics on
// metricsAddr ("" disables it); stop ends the metrics server.
func listenWithMetrics(addr, metricsAddr string, log *slog.Logger) (ln net.Listener, reg *prometheus.Registry, stop func(), err error) {
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	reg = newRegistry()
	_, stop, err = serveMetrics(metricsAddr, reg, log)
	if err != nil {
		_ = ln.Close()
		return nil, nil, nil, fmt.Errorf("metrics: %w", err)
	}
	return ln, reg, stop, nil
}
