package coderhttp

import "net/http"

// Headers Coder's workspace proxy puts on the responses it answers.
const (
	// RequestIDHeader carries the request's ID on every response but the
	// dashboard's latency probe; wsedge's is Envoy's x-request-id, the ID
	// in Envoy's access log and in authz's and the dialer's log lines.
	RequestIDHeader = "X-Coder-Request-Id"
	// BuildVersionHeader carries the proxy's version on every response
	// outside the subdomain-app handler (path apps, terminals, probes,
	// DERP, error pages).
	BuildVersionHeader = "X-Coder-Build-Version"
)

// SetProxyHeaders sets what Coder's proxy adds to every response outside
// its subdomain-app handler (and outside the latency probe): the build
// version and nosniff. Subdomain-app responses get neither from the
// proxy (nosniff there is the app's business).
func SetProxyHeaders(h http.Header, version string) {
	h.Set(BuildVersionHeader, version)
	h.Set("X-Content-Type-Options", "nosniff")
}
