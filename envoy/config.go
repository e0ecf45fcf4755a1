package envoy

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid envoy config")

// ConfigError names the Config field that failed validation.
type ConfigError struct {
	Field string // flag name of the field
	Err   error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("envoy config: %s: %v", e.Field, e.Err) }

// Unwrap lets errors.Is match both ErrInvalidConfig and the cause.
func (e *ConfigError) Unwrap() []error { return []error{ErrInvalidConfig, e.Err} }

// Config is the small set of choices the generated bootstrap depends on. Every
// field has a flag of `wsedge envoy-config` (registered by the command, in
// cmd/wsedge/envoyflags).
type Config struct {
	// ListenAddr is where the edge listener binds. Port 0 lets the kernel
	// choose (tests read the bound port from the admin endpoint).
	ListenAddr netip.AddrPort
	// RedirectListenAddr, if valid, adds a plain-HTTP listener that
	// redirects every request to HTTPS (only with TLS termination).
	RedirectListenAddr netip.AddrPort
	// TLSCertFile and TLSKeyFile are PEM files for TLS termination; both
	// empty means plain HTTP (local runs).
	TLSCertFile, TLSKeyFile string
	// AccessURLHost is the host[:port] of the proxy's access URL.
	AccessURLHost string
	// WildcardHostname is the subdomain-app pattern, e.g.
	// "*.apps.example.com" or "*--apps.example.com"; empty disables the
	// wildcard virtual host.
	WildcardHostname string
	// DashboardURL is the primary's URL; its origin is the one origin allowed
	// by the static CORS policy of non-app routes. Empty disables that policy.
	DashboardURL string
	// AuthzAddr and DialerAddr are host:port of wsedge authz (gRPC) and
	// wsedge dialer (HTTP/1.1).
	AuthzAddr, DialerAddr string
	// AdminAddr is Envoy's admin listener; keep it on loopback.
	AdminAddr netip.AddrPort
	// FastPath lets Envoy verify signed app token cookies itself and skip
	// ext_authz for requests whose token verified, and ext_proc for all but
	// cross-origin requests (see fastpath.go). On by default.
	FastPath bool
	// AuthzJWKSAddr is host:port of wsedge authz's internal JWKS listener
	// (`wsedge authz --jwks-listen`), which only Envoy may reach. Used
	// with FastPath.
	AuthzJWKSAddr string

	// AuthzTimeout bounds one ext_authz Check call.
	AuthzTimeout time.Duration
	// ExtProcTimeout bounds one ext_proc message (used once the ext_proc
	// filter is added).
	ExtProcTimeout time.Duration
	// ConnectTimeout bounds connecting to authz and the dialer.
	ConnectTimeout time.Duration
	// RequestHeadersTimeout bounds receiving a request's headers.
	RequestHeadersTimeout time.Duration
	// StreamIdleTimeout closes streams idle this long on ordinary routes.
	StreamIdleTimeout time.Duration
	// UpgradeIdleTimeout is the idle timeout of app, terminal and DERP routes
	// (long-lived websockets); those routes have no total timeout.
	UpgradeIdleTimeout time.Duration
	// RouteTimeout is the total timeout of the remaining (short) routes.
	RouteTimeout time.Duration
	// XFFNumTrustedHops is how many X-Forwarded-For hops in front of Envoy
	// are trusted (0: Envoy is the edge).
	XFFNumTrustedHops uint
	// RateLimit is the per-user local rate limit; off unless
	// RateLimit.Requests is set.
	RateLimit RateLimit
	// AccessLog is which requests the JSON access log records:
	// AccessLogErrors (the default; empty means the same), AccessLogAll or
	// AccessLogOff.
	AccessLog string
	// AccessLogPath is where the JSON access log goes; empty is stdout.
	AccessLogPath string
	// UpstreamStats turns on the router's dynamic stats for the requests
	// it sends to the dialer: cluster.dialer.upstream_rq_<code>, _<class>xx,
	// _completed and the upstream_rq_time histogram, each twice (the
	// external.* copy). Off by default: every request to the dialer is a
	// request of the edge's own, counted and timed by the listener's
	// http.edge.downstream_rq_* stats, and the dialer's own metrics
	// (wsedge_dialer_requests_total, _request_duration_seconds) break
	// them down by route; charging the copies costs Envoy about 4 % of
	// its work per warm request (make bench-envoy). Calls to authz are
	// charged either way (their client is not this router).
	UpstreamStats bool
	// Tracing exports Envoy's spans over OTLP; off unless
	// Tracing.OTLPEndpoint is set.
	Tracing Tracing
	// Limits are the overload manager's and circuit breakers' bounds.
	Limits Limits
}

// RateLimit is Envoy's local (per Envoy process) rate limit of checked
// requests, one token bucket per key: the user ID authz emits on allow
// (metadata rate_limit_key), else the client address (IPv4 /32, IPv6 /64,
// after X-Forwarded-For handling). See localRateLimitFilter.
type RateLimit struct {
	// Requests is the sustained number of requests per Interval one key
	// may make; 0 turns rate limiting off (the default).
	Requests uint
	// Burst is the size of a key's bucket (requests it may make at once
	// after being idle); 0 means Requests.
	Burst uint
	// Interval is the period Requests refer to (at least 50ms, whole
	// milliseconds); tokens refill continuously across it.
	Interval time.Duration
	// MaxKeys bounds the buckets Envoy keeps per kind of key (users,
	// anonymous clients), least recently used first out. An evicted key
	// starts again with a full bucket.
	MaxKeys uint
	// BeforeAuthz adds a second limiter in front of ext_authz, keyed by
	// client address only, with the same bucket: every checked request
	// counts, the ones authz denies included — the way Coder's own proxy
	// limits app requests (per client IP, before authentication). It
	// keeps floods of bogus session tokens away from authz and the
	// primary. Needs Requests.
	BeforeAuthz bool
}

// Enabled reports whether rate limiting is on.
func (r RateLimit) Enabled() bool { return r.Requests > 0 }

// burst is the bucket size actually configured.
func (r RateLimit) burst() uint {
	if r.Burst == 0 {
		return r.Requests
	}
	return r.Burst
}

// DefaultConfig is suitable for a local run: plain HTTP on 127.0.0.1:8080,
// access URL localhost:8080, subdomain apps on *.apps.localhost, authz and
// dialer on their default loopback ports.
func DefaultConfig() Config {
	return Config{
		ListenAddr:            netip.MustParseAddrPort("127.0.0.1:8080"),
		AccessURLHost:         "localhost:8080",
		WildcardHostname:      "*.apps.localhost",
		DashboardURL:          "http://localhost:3000",
		AuthzAddr:             "127.0.0.1:9001",
		DialerAddr:            "127.0.0.1:9002",
		FastPath:              true,
		AuthzJWKSAddr:         "127.0.0.1:9003",
		AdminAddr:             netip.MustParseAddrPort("127.0.0.1:9901"),
		AuthzTimeout:          2 * time.Second,
		ExtProcTimeout:        2 * time.Second,
		ConnectTimeout:        2 * time.Second,
		RequestHeadersTimeout: 10 * time.Second,
		StreamIdleTimeout:     5 * time.Minute,
		UpgradeIdleTimeout:    time.Hour,
		RouteTimeout:          time.Minute,
		AccessLog:             AccessLogErrors,
		RateLimit:             RateLimit{Interval: time.Minute, MaxKeys: 10000},
		Tracing:               Tracing{SamplePercent: 100, ServiceName: DefaultTraceServiceName},
		Limits:                DefaultLimits(),
	}
}

// Validate reports the first invalid field as a *ConfigError.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if !c.ListenAddr.IsValid() {
		return bad("listen", "missing address")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return bad("tls-cert", "certificate and key must be given together")
	}
	if c.RedirectListenAddr.IsValid() {
		if c.TLSCertFile == "" {
			return bad("http-redirect-listen", "redirecting to https needs TLS termination (--tls-cert, --tls-key)")
		}
		if c.RedirectListenAddr == c.ListenAddr && c.ListenAddr.Port() != 0 {
			return bad("http-redirect-listen", "must differ from --listen")
		}
	}
	if _, _, err := splitHostPort(c.AccessURLHost); err != nil {
		return bad("access-url-host", "%w", err)
	}
	if c.WildcardHostname != "" {
		if _, err := wildcardDomain(c.WildcardHostname); err != nil {
			return bad("wildcard-hostname", "%w", err)
		}
	}
	if c.DashboardURL != "" {
		if _, err := origin(c.DashboardURL); err != nil {
			return bad("dashboard-url", "%w", err)
		}
	}
	for _, a := range []struct{ field, v string }{{"authz-addr", c.AuthzAddr}, {"dialer-addr", c.DialerAddr}} {
		if _, port, err := splitHostPort(a.v); err != nil {
			return bad(a.field, "%w", err)
		} else if port == 0 {
			return bad(a.field, "%q needs a port", a.v)
		}
	}
	if c.FastPath {
		if _, port, err := splitHostPort(c.AuthzJWKSAddr); err != nil {
			return bad("authz-jwks-addr", "%w", err)
		} else if port == 0 {
			return bad("authz-jwks-addr", "%q needs a port", c.AuthzJWKSAddr)
		}
	}
	if !c.AdminAddr.IsValid() {
		return bad("admin-addr", "missing address")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"authz-timeout", c.AuthzTimeout},
		{"ext-proc-timeout", c.ExtProcTimeout},
		{"connect-timeout", c.ConnectTimeout},
		{"request-headers-timeout", c.RequestHeadersTimeout},
		{"stream-idle-timeout", c.StreamIdleTimeout},
		{"upgrade-idle-timeout", c.UpgradeIdleTimeout},
		{"route-timeout", c.RouteTimeout},
	} {
		if d.v <= 0 {
			return bad(d.field, "must be positive, got %s", d.v)
		}
		if d.v%time.Millisecond != 0 {
			return bad(d.field, "must be whole milliseconds, got %s", d.v)
		}
	}
	switch c.AccessLog {
	case "", AccessLogAll, AccessLogErrors, AccessLogOff:
	default:
		return bad("access-log", "%q: want %s, %s or %s", c.AccessLog, AccessLogErrors, AccessLogAll, AccessLogOff)
	}
	if err := c.RateLimit.validate(); err != nil {
		return err
	}
	return c.Tracing.validate()
}

// validate checks the rate limit settings when the limit is on; a burst
// without a rate is refused so that a half-configured limit is not
// silently off.
func (r RateLimit) validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if !r.Enabled() {
		if r.Burst != 0 {
			return bad("rate-limit-burst", "set without -rate-limit")
		}
		if r.BeforeAuthz {
			return bad("rate-limit-before-authz", "set without -rate-limit")
		}
		return nil
	}
	const maxTokens = math.MaxUint32
	if r.Requests > maxTokens {
		return bad("rate-limit", "at most %d, got %d", uint64(maxTokens), r.Requests)
	}
	if r.Burst > maxTokens {
		return bad("rate-limit-burst", "at most %d, got %d", uint64(maxTokens), r.Burst)
	}
	if r.Interval < minRateLimitInterval {
		return bad("rate-limit-interval", "must be at least %s, got %s", minRateLimitInterval, r.Interval)
	}
	if r.Interval%time.Millisecond != 0 {
		return bad("rate-limit-interval", "must be whole milliseconds, got %s", r.Interval)
	}
	if r.MaxKeys == 0 || r.MaxKeys > maxTokens {
		return bad("rate-limit-max-keys", "must be between 1 and %d, got %d", uint64(maxTokens), r.MaxKeys)
	}
	return nil
}

// minRateLimitInterval is Envoy's lower bound on a token bucket's
// fill_interval.
const minRateLimitInterval = 50 * time.Millisecond

// splitHostPort splits host[:port], lower-cases the host and checks it is a
// plain DNS name or IP literal. port is 0 when absent.
func splitHostPort(hostport string) (string, uint16, error) {
	if hostport == "" {
		return "", 0, errors.New("empty")
	}
	host, portStr := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, portStr = h, p
	} else if strings.Count(hostport, ":") == 1 || strings.HasPrefix(hostport, "[") {
		return "", 0, fmt.Errorf("%q: %w", hostport, err)
	}
	var port uint16
	if portStr != "" {
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || p == 0 {
			return "", 0, fmt.Errorf("%q: bad port %q", hostport, portStr)
		}
		port = uint16(p)
	}
	host = strings.ToLower(host)
	if _, err := netip.ParseAddr(host); err == nil {
		return host, port, nil
	}
	if err := checkDNSName(host); err != nil {
		return "", 0, fmt.Errorf("%q: %w", hostport, err)
	}
	return host, port, nil
}

// checkDNSName accepts lower-case LDH labels separated by dots.
func checkDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("bad host name length")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("bad host label %q", label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("bad character %q in host", r)
			}
		}
	}
	return nil
}

// wildcardDomain turns Coder's wildcard hostname (exactly one "*", first,
// optional ":port") into an Envoy suffix-wildcard domain. Envoy only allows
// "*" as a whole prefix, which is exactly Coder's rule, so "*.apps.x" and
// "*--apps.x" both become themselves, lower-cased, without the port (the
// route configuration ignores ports in host matching).
func wildcardDomain(pattern string) (string, error) {
	p := strings.ToLower(pattern)
	if strings.Contains(p, "://") {
		return "", fmt.Errorf("%q: a host pattern, not a URL", pattern)
	}
	if h, _, err := net.SplitHostPort(p); err == nil {
		p = h
	}
	if !strings.HasPrefix(p, "*") || strings.Count(p, "*") != 1 {
		return "", fmt.Errorf("%q: exactly one '*', as the first character", pattern)
	}
	rest := "x" + p[1:]
	if strings.HasPrefix(p, "*.") {
		rest = p[2:]
	}
	if strings.HasSuffix(p, ".") || !strings.Contains(rest, ".") {
		return "", fmt.Errorf("%q: needs at least two labels after the wildcard", pattern)
	}
	if err := checkDNSName(rest); err != nil {
		return "", fmt.Errorf("%q: %w", pattern, err)
	}
	return p, nil
}

// origin returns scheme://host[:port] of an absolute http(s) URL.
func origin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q: need an absolute http or https URL", raw)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}
