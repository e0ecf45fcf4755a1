package envoy

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no listen", func(c *Config) { c.ListenAddr = netip.AddrPort{} }, "listen"},
		{"cert without key", func(c *Config) { c.TLSCertFile = "/x.crt" }, "tls-cert"},
		{"key without cert", func(c *Config) { c.TLSKeyFile = "/x.key" }, "tls-cert"},
		{"http redirect without TLS", func(c *Config) { c.RedirectListenAddr = netip.MustParseAddrPort("127.0.0.1:80") }, "http-redirect-listen"},
		{"http redirect on the edge address", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile = "/x.crt", "/x.key"
			c.RedirectListenAddr = c.ListenAddr
		}, "http-redirect-listen"},
		{"empty access host", func(c *Config) { c.AccessURLHost = "" }, "access-url-host"},
		{"access URL not host", func(c *Config) { c.AccessURLHost = "https://proxy.example.com" }, "access-url-host"},
		{"access host bad port", func(c *Config) { c.AccessURLHost = "proxy.example.com:99999" }, "access-url-host"},
		{"access host space", func(c *Config) { c.AccessURLHost = "proxy example.com" }, "access-url-host"},
		{"wildcard not first", func(c *Config) { c.WildcardHostname = "apps.*.example.com" }, "wildcard-hostname"},
		{"wildcard two stars", func(c *Config) { c.WildcardHostname = "*.*.example.com" }, "wildcard-hostname"},
		{"wildcard no star", func(c *Config) { c.WildcardHostname = "apps.example.com" }, "wildcard-hostname"},
		{"wildcard one label", func(c *Config) { c.WildcardHostname = "*.com" }, "wildcard-hostname"},
		{"wildcard url", func(c *Config) { c.WildcardHostname = "https://*.apps.example.com" }, "wildcard-hostname"},
		{"wildcard trailing dot", func(c *Config) { c.WildcardHostname = "*.apps.example.com." }, "wildcard-hostname"},
		{"dashboard not absolute", func(c *Config) { c.DashboardURL = "coder.example.com" }, "dashboard-url"},
		{"dashboard ftp", func(c *Config) { c.DashboardURL = "ftp://coder.example.com" }, "dashboard-url"},
		{"authz no port", func(c *Config) { c.AuthzAddr = "authz" }, "authz-addr"},
		{"jwks no port", func(c *Config) { c.AuthzJWKSAddr = "authz" }, "authz-jwks-addr"},
		{"jwks empty", func(c *Config) { c.AuthzJWKSAddr = "" }, "authz-jwks-addr"},
		{"dialer empty", func(c *Config) { c.DialerAddr = "" }, "dialer-addr"},
		{"no admin", func(c *Config) { c.AdminAddr = netip.AddrPort{} }, "admin-addr"},
		{"zero authz timeout", func(c *Config) { c.AuthzTimeout = 0 }, "authz-timeout"},
		{"negative idle", func(c *Config) { c.UpgradeIdleTimeout = -time.Second }, "upgrade-idle-timeout"},
		{"sub-millisecond", func(c *Config) { c.ConnectTimeout = 1500 * time.Microsecond }, "connect-timeout"},
		{"burst without rate", func(c *Config) { c.RateLimit.Burst = 5 }, "rate-limit-burst"},
		{"before-authz limit without rate", func(c *Config) { c.RateLimit.BeforeAuthz = true }, "rate-limit-before-authz"},
		{"rate limit interval short", func(c *Config) { c.RateLimit.Requests, c.RateLimit.Interval = 5, 49*time.Millisecond }, "rate-limit-interval"},
		{"rate limit interval fraction", func(c *Config) { c.RateLimit.Requests, c.RateLimit.Interval = 5, 50500*time.Microsecond }, "rate-limit-interval"},
		{"rate limit no keys", func(c *Config) { c.RateLimit.Requests, c.RateLimit.MaxKeys = 5, 0 }, "rate-limit-max-keys"},
		{"rate limit too many", func(c *Config) { c.RateLimit.Requests = 1 << 32 }, "rate-limit"},
		{"access log mode unknown", func(c *Config) { c.AccessLog = "some" }, "access-log"},
		{"access log mode spelt in capitals", func(c *Config) { c.AccessLog = "OFF" }, "access-log"},
		{"rate limit burst too big", func(c *Config) { c.RateLimit.Requests, c.RateLimit.Burst = 1, 1<<32 }, "rate-limit-burst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want a *ConfigError wrapping ErrInvalidConfig", err)
			}
			if ce.Field != tt.field {
				t.Fatalf("field = %q, want %q (%v)", ce.Field, tt.field, err)
			}
			if _, err := YAML(c); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("YAML() error = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, edit := range []func(*Config){
		func(*Config) {},
		func(c *Config) { c.WildcardHostname = "" },
		func(c *Config) { c.WildcardHostname = "*--apps.example.com" },
		func(c *Config) { c.WildcardHostname = "*.Apps.Example.com:8443" },
		func(c *Config) { c.AccessURLHost = "[::1]:8443" },
		func(c *Config) { c.AccessURLHost = "Proxy.Example.com" },
		func(c *Config) { c.DashboardURL = "" },
		func(c *Config) { c.AuthzAddr = "authz.wsedge.svc:9001" },
		func(c *Config) { c.DialerAddr = "[::1]:9002" },
		func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "/c", "/k" },
	} {
		c := DefaultConfig()
		edit(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
}

func TestWildcardDomain(t *testing.T) {
	for in, want := range map[string]string{
		"*.apps.example.com":      "*.apps.example.com",
		"*--apps.example.com":     "*--apps.example.com",
		"*.APPS.example.com:8080": "*.apps.example.com",
		"*-suffix.example.com":    "*-suffix.example.com",
	} {
		got, err := wildcardDomain(in)
		if err != nil || got != want {
			t.Errorf("wildcardDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
