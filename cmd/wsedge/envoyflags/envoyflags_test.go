package envoyflags

import (
	"flag"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/envoy"
)

func TestRegister(t *testing.T) {
	c := envoy.DefaultConfig()
	fs := flag.NewFlagSet("envoy-config", flag.ContinueOnError)
	Register(fs, &c)
	err := fs.Parse([]string{
		"-listen", "0.0.0.0:443", "-tls-cert", "/c.pem", "-tls-key", "/k.pem",
		"-access-url-host", "proxy.example.com", "-wildcard-hostname", "*--apps.example.com",
		"-dashboard-url", "https://coder.example.com", "-authz-addr", "authz:1", "-dialer-addr", "dialer:2",
		"-admin-addr", "127.0.0.1:9000", "-authz-timeout", "750ms", "-ext-proc-timeout", "3s",
		"-connect-timeout", "4s", "-request-headers-timeout", "5s", "-stream-idle-timeout", "6s",
		"-upgrade-idle-timeout", "7s", "-route-timeout", "8s", "-xff-num-trusted-hops", "2",
		"-access-log", "all", "-access-log-path", "/var/log/envoy.json", "-rate-limit", "120", "-rate-limit-burst", "30",
		"-rate-limit-interval", "10s", "-rate-limit-max-keys", "500", "-rate-limit-before-authz",
		"-fast-path=false", "-authz-jwks-addr", "authz:3",
		"-max-heap-bytes", "1000", "-max-downstream-connections", "20", "-authz-max-requests", "30",
		"-dialer-max-requests", "40", "-dialer-max-pending-requests", "50",
		"-otlp-endpoint", "otel-collector:4317", "-trace-sample-percent", "2.5", "-trace-service-name", "edge-eu",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := envoy.Config{
		ListenAddr: netip.MustParseAddrPort("0.0.0.0:443"), TLSCertFile: "/c.pem", TLSKeyFile: "/k.pem",
		AccessURLHost: "proxy.example.com", WildcardHostname: "*--apps.example.com",
		DashboardURL: "https://coder.example.com", AuthzAddr: "authz:1", DialerAddr: "dialer:2",
		AdminAddr: netip.MustParseAddrPort("127.0.0.1:9000"), AuthzTimeout: 750 * time.Millisecond,
		ExtProcTimeout: 3 * time.Second, ConnectTimeout: 4 * time.Second, RequestHeadersTimeout: 5 * time.Second,
		StreamIdleTimeout: 6 * time.Second, UpgradeIdleTimeout: 7 * time.Second, RouteTimeout: 8 * time.Second,
		XFFNumTrustedHops: 2, AccessLog: "all", AccessLogPath: "/var/log/envoy.json", FastPath: false, AuthzJWKSAddr: "authz:3",
		Limits:    envoy.Limits{MaxHeapBytes: 1000, MaxDownstreamConnections: 20, AuthzMaxRequests: 30, DialerMaxRequests: 40, DialerMaxPendingRequests: 50},
		Tracing:   envoy.Tracing{OTLPEndpoint: "otel-collector:4317", SamplePercent: 2.5, ServiceName: "edge-eu"},
		RateLimit: envoy.RateLimit{Requests: 120, Burst: 30, Interval: 10 * time.Second, MaxKeys: 500, BeforeAuthz: true},
	}
	if c != want {
		t.Fatalf("flags gave\n%+v\nwant\n%+v", c, want)
	}
	// Every flag has help text.
	fs.VisitAll(func(f *flag.Flag) {
		if strings.TrimSpace(f.Usage) == "" {
			t.Errorf("flag -%s has no help", f.Name)
		}
	})
	if err := fs.Parse([]string{"-listen", "nonsense"}); err == nil {
		t.Fatal("bad -listen accepted")
	}
}
