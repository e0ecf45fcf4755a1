package envoy

import "net/netip"

// Example is one checked-in example bootstrap under examples/.
type Example struct {
	File   string // file name under examples/
	Config Config
}

// Examples are the bootstraps `go generate` writes to examples/: plain HTTP
// for a local run, TLS for a deployment, and the TLS deployment with
// per-user rate limiting on (600 requests a minute, bursts of 100), and
// the TLS deployment tracing 10% of requests to an OTLP collector.
func Examples() []Example {
	plain := DefaultConfig()

	tls := DefaultConfig()
	tls.ListenAddr = netip.MustParseAddrPort("0.0.0.0:8443")
	tls.TLSCertFile = "/etc/wsedge/tls.crt"
	tls.TLSKeyFile = "/etc/wsedge/tls.key"
	tls.AccessURLHost = "proxy.example.com"
	tls.WildcardHostname = "*.apps.example.com"
	tls.DashboardURL = "https://coder.example.com"
	tls.AuthzAddr = "authz:9001"
	tls.DialerAddr = "dialer:9002"

	limited := tls
	limited.RateLimit.Requests = 600
	limited.RateLimit.Burst = 100
	limited.RateLimit.BeforeAuthz = true

	traced := tls
	traced.Tracing.OTLPEndpoint = "otel-collector:4317"
	traced.Tracing.SamplePercent = 10

	return []Example{
		{File: "plain.yaml", Config: plain},
		{File: "tls.yaml", Config: tls},
		{File: "ratelimit.yaml", Config: limited},
		{File: "tracing.yaml", Config: traced},
	}
}
