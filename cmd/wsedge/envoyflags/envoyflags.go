// Package envoyflags is the command line of `wsedge envoy-config`: one flag
// per field of envoy.Config. The generator library knows nothing of flags;
// the command registers them. It is a package of its own, beside the
// command, only so that the deploy tests parse the checked-in envoy-config
// command lines exactly as the command does.
package envoyflags

import (
	"flag"

	"github.com/wsedge/wsedge/envoy"
)

// Register binds one flag per field of c to fs; the current values of c are
// the defaults (start from envoy.DefaultConfig).
func Register(fs *flag.FlagSet, c *envoy.Config) {
	fs.TextVar(&c.ListenAddr, "listen", c.ListenAddr, "`addr:port` of the edge listener (port 0: kernel-chosen)")
	fs.TextVar(&c.RedirectListenAddr, "http-redirect-listen", c.RedirectListenAddr, "`addr:port` of a plain-HTTP listener that answers every request with a 301 to https (needs --tls-cert; empty: none)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", c.TLSCertFile, "PEM certificate `file` for TLS termination (empty with -tls-key: plain HTTP)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", c.TLSKeyFile, "PEM private key `file` for TLS termination")
	fs.StringVar(&c.AccessURLHost, "access-url-host", c.AccessURLHost, "`host[:port]` of the proxy's access URL")
	fs.StringVar(&c.WildcardHostname, "wildcard-hostname", c.WildcardHostname, "subdomain app `pattern`, e.g. *.apps.example.com or *--apps.example.com (empty: no subdomain apps)")
	fs.StringVar(&c.DashboardURL, "dashboard-url", c.DashboardURL, "`URL` of the Coder dashboard; its origin is allowed by the static CORS policy (empty: no CORS)")
	fs.StringVar(&c.AuthzAddr, "authz-addr", c.AuthzAddr, "`host:port` of wsedge authz (gRPC ext_authz)")
	fs.StringVar(&c.DialerAddr, "dialer-addr", c.DialerAddr, "`host:port` of wsedge dialer (HTTP)")
	fs.BoolVar(&c.FastPath, "fast-path", c.FastPath, "let Envoy verify signed app token cookies (keys from authz's JWKS) and skip ext_authz for them; the dialer enforces the token (false: every app request meets ext_authz)")
	fs.StringVar(&c.AuthzJWKSAddr, "authz-jwks-addr", c.AuthzJWKSAddr, "`host:port` of wsedge authz's internal JWKS listener (authz --jwks-listen; with -fast-path)")
	fs.TextVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "`addr:port` of Envoy's admin endpoint (keep on loopback)")
	fs.DurationVar(&c.AuthzTimeout, "authz-timeout", c.AuthzTimeout, "timeout of one ext_authz check (failure answers 503)")
	fs.DurationVar(&c.ExtProcTimeout, "ext-proc-timeout", c.ExtProcTimeout, "timeout of one ext_proc message")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", c.ConnectTimeout, "timeout connecting to authz and the dialer")
	fs.DurationVar(&c.RequestHeadersTimeout, "request-headers-timeout", c.RequestHeadersTimeout, "timeout for a client to send request headers")
	fs.DurationVar(&c.StreamIdleTimeout, "stream-idle-timeout", c.StreamIdleTimeout, "idle timeout of streams on ordinary routes")
	fs.DurationVar(&c.UpgradeIdleTimeout, "upgrade-idle-timeout", c.UpgradeIdleTimeout, "idle timeout of app, terminal and DERP streams (no total timeout)")
	fs.DurationVar(&c.RouteTimeout, "route-timeout", c.RouteTimeout, "total timeout of health, build info and catch-all requests")
	fs.UintVar(&c.XFFNumTrustedHops, "xff-num-trusted-hops", c.XFFNumTrustedHops, "number of trusted proxies in front of Envoy (X-Forwarded-For hops)")
	fs.UintVar(&c.RateLimit.Requests, "rate-limit", c.RateLimit.Requests, "requests per -rate-limit-interval allowed to each user (to each client IP when no user is known); 0 disables rate limiting")
	fs.UintVar(&c.RateLimit.Burst, "rate-limit-burst", c.RateLimit.Burst, "requests a user or client IP may make at once after being idle (0: same as -rate-limit)")
	fs.DurationVar(&c.RateLimit.Interval, "rate-limit-interval", c.RateLimit.Interval, "period of -rate-limit (tokens refill continuously; at least 50ms)")
	fs.UintVar(&c.RateLimit.MaxKeys, "rate-limit-max-keys", c.RateLimit.MaxKeys, "per-user and per-IP buckets Envoy keeps (each), least recently used evicted first")
	fs.BoolVar(&c.RateLimit.BeforeAuthz, "rate-limit-before-authz", c.RateLimit.BeforeAuthz, "also limit each client address to -rate-limit before authorization, counting requests authz denies (as Coder's own proxy does); needs -rate-limit")
	fs.StringVar(&c.AccessLog, "access-log", c.AccessLog, "which requests the JSON access log records: errors (status ≥ 400 or an Envoy response flag), all or off")
	fs.StringVar(&c.AccessLogPath, "access-log-path", c.AccessLogPath, "`file` for the JSON access log (empty: stdout)")
	fs.BoolVar(&c.UpstreamStats, "upstream-stats", c.UpstreamStats, "Envoy's per-status and latency stats of the dialer cluster (cluster.dialer.upstream_rq_*: the router's dynamic stats); off: the edge's http.edge.downstream_rq_* and the dialer's metrics count the same requests, for about 4% less Envoy CPU per request")
	fs.Uint64Var(&c.Limits.MaxHeapBytes, "max-heap-bytes", c.Limits.MaxHeapBytes, "heap Envoy may use: at 90% it frees memory, at 95% it answers new requests 503 with Retry-After")
	fs.Uint64Var(&c.Limits.MaxDownstreamConnections, "max-downstream-connections", c.Limits.MaxDownstreamConnections, "client connections over all listeners; beyond it new connections are closed as accepted")
	fs.UintVar(&c.Limits.AuthzMaxRequests, "authz-max-requests", c.Limits.AuthzMaxRequests, "circuit breaker: concurrent ext_authz and ext_proc calls to authz; beyond it 503 with Retry-After")
	fs.UintVar(&c.Limits.DialerMaxRequests, "dialer-max-requests", c.Limits.DialerMaxRequests, "circuit breaker: concurrent requests and websockets to the dialer (and connections, HTTP/1.1); beyond them and the pending queue 503 with Retry-After")
	fs.UintVar(&c.Limits.DialerMaxPendingRequests, "dialer-max-pending-requests", c.Limits.DialerMaxPendingRequests, "circuit breaker: requests waiting for a dialer connection")
	fs.StringVar(&c.Tracing.OTLPEndpoint, "otlp-endpoint", c.Tracing.OTLPEndpoint, "`host:port` of an OTLP/gRPC collector for Envoy's OpenTelemetry traces (W3C traceparent); empty: no tracing")
	fs.Float64Var(&c.Tracing.SamplePercent, "trace-sample-percent", c.Tracing.SamplePercent, "`percent` of requests Envoy samples (random_sampling; a request with a traceparent continues that trace); needs -otlp-endpoint")
	fs.StringVar(&c.Tracing.ServiceName, "trace-service-name", c.Tracing.ServiceName, "service.name of Envoy's spans")
}
