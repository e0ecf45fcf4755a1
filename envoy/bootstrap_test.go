package envoy

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/internal/testutil"
)

func hcmOf(t *testing.T, c Config) *hcmv3.HttpConnectionManager {
	t.Helper()
	b, err := Bootstrap(c)
	if err != nil {
		t.Fatal(err)
	}
	var m hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func TestFilterOrder(t *testing.T) {
	m := hcmOf(t, DefaultConfig())
	var names []string
	for _, f := range m.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	want := []string{headerMutationFilterName, corsFilterName, ExtProcPreflightFilter, edgewire.JWTAuthnFilter, edgewire.ExtAuthzFilter, ExtProcFilter, routerFilterName}
	if !slices.Equal(names, want) {
		t.Fatalf("filters = %v, want %v (internal headers must go before ext_authz, jwt_authn just before it, the app policy after it)", names, want)
	}
}

// filterByName returns the HCM's filter called name.
func filterByName(t *testing.T, m *hcmv3.HttpConnectionManager, name string) *hcmv3.HttpFilter {
	t.Helper()
	for _, f := range m.GetHttpFilters() {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no filter %s", name)
	return nil
}

func TestExtAuthzFailsClosed(t *testing.T) {
	m := hcmOf(t, DefaultConfig())
	var az extauthzv3.ExtAuthz
	if err := filterByName(t, m, edgewire.ExtAuthzFilter).GetTypedConfig().UnmarshalTo(&az); err != nil {
		t.Fatal(err)
	}
	if az.GetFailureModeAllow() || az.GetIncludePeerCertificate() || az.GetWithRequestBody() != nil {
		t.Fatalf("ext_authz must fail closed without peer cert or body: %v", &az)
	}
	if az.GetStatusOnError().GetCode() != typev3.StatusCode_ServiceUnavailable {
		t.Fatalf("status_on_error = %v", az.GetStatusOnError())
	}
	if got := az.GetGrpcService().GetTimeout().AsDuration(); got != DefaultConfig().AuthzTimeout {
		t.Fatalf("timeout = %s", got)
	}
	if az.GetGrpcService().GetEnvoyGrpc().GetClusterName() != AuthzCluster {
		t.Fatalf("cluster = %v", az.GetGrpcService())
	}
}

func TestStripsInternalHeadersByPrefix(t *testing.T) {
	y, err := YAML(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "remove_on_match:\n                    key_matcher:\n                      ignore_case: true\n                      prefix: x-wsedge-") {
		t.Fatalf("no x-wsedge- prefix removal in\n%s", y)
	}
}

// uncheckedRoutes maps virtual host name → names of routes with ext_authz off.
func uncheckedRoutes(t *testing.T, m *hcmv3.HttpConnectionManager) map[string][]string {
	out := map[string][]string{}
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a, ok := r.GetTypedPerFilterConfig()[edgewire.ExtAuthzFilter]
			if !ok {
				continue
			}
			var per extauthzv3.ExtAuthzPerRoute
			var fc routev3.FilterConfig
			if a.MessageIs(&fc) {
				if err := a.UnmarshalTo(&fc); err != nil {
					t.Fatal(err)
				}
				if fc.GetDisabled() {
					out[vh.GetName()] = append(out[vh.GetName()], r.GetName())
				}
				continue
			}
			if err := a.UnmarshalTo(&per); err != nil {
				t.Fatal(err)
			}
			if per.GetDisabled() {
				out[vh.GetName()] = append(out[vh.GetName()], r.GetName())
			}
		}
	}
	return out
}

func TestRoutes(t *testing.T) {
	c := DefaultConfig()
	c.WildcardHostname = "*--apps.Example.com:8443"
	c.AccessURLHost = "Proxy.Example.com:8443"
	m := hcmOf(t, c)
	rc := m.GetRouteConfig()
	if !rc.GetIgnorePortInHostMatching() {
		t.Fatal("ports must be ignored in host matching")
	}
	var domains [][]string
	for _, vh := range rc.GetVirtualHosts() {
		domains = append(domains, vh.GetDomains())
	}
	if want := [][]string{{"proxy.example.com"}, {"*--apps.example.com"}, {"*"}}; !slices.EqualFunc(domains, want, slices.Equal) {
		t.Fatalf("domains = %v, want %v", domains, want)
	}

	unchecked := uncheckedRoutes(t, m)
	// The warm twins leave the check to the dialer (TestWarmRoutes).
	if want := []string{"healthz", "healthz-report", "buildinfo", "latency-check", "derp", "derp-slash", "derp-latency-check", "path-app-warm", "path-app-warm-same-origin", "path-app-warm-websocket", "path-app-encoded-warm", "path-app-encoded-warm-same-origin", "path-app-encoded-warm-websocket"}; !slices.Equal(unchecked["access"], want) {
		t.Fatalf("access routes without ext_authz = %v, want %v", unchecked["access"], want)
	}
	if want := []string{"healthz", "healthz-report", "buildinfo", "latency-check", "unknown-host"}; !slices.Equal(unchecked["fallback"], want) {
		t.Fatalf("fallback routes without ext_authz = %v, want %v", unchecked["fallback"], want)
	}
	if want := []string{"latency-check", "subdomain-app-warm", "subdomain-app-warm-same-origin", "subdomain-app-warm-websocket"}; !slices.Equal(unchecked["apps"], want) {
		t.Fatalf("app host routes without ext_authz = %v, want %v", unchecked["apps"], want)
	}
	// Every route that skips ext_authz matches one exact path, answers
	// directly, or is a warm twin that sends the token to the dialer.
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if slices.Contains(unchecked[vh.GetName()], r.GetName()) && r.GetMatch().GetPath() == "" && r.GetDirectResponse() == nil && !isWarmTwin(r.GetName()) {
				t.Errorf("%s/%s skips ext_authz without an exact path: %v", vh.GetName(), r.GetName(), r.GetMatch())
			}
		}
	}

	access := rc.GetVirtualHosts()[0]
	byName := map[string]*routev3.Route{}
	for _, r := range access.GetRoutes() {
		byName[r.GetName()] = r
	}
	for name, match := range map[string]string{"path-app": "/@", "path-app-encoded": "/%40", "catch-all": "/"} {
		if got := byName[name].GetMatch().GetPrefix(); got != match {
			t.Errorf("%s prefix = %q, want %q", name, got, match)
		}
	}
	if got := byName["terminal"].GetMatch().GetSafeRegex().GetRegex(); got != TerminalPathRegex {
		t.Errorf("terminal regex = %q", got)
	}
	if last := access.GetRoutes()[len(access.GetRoutes())-1].GetName(); last != "catch-all" {
		t.Errorf("last access route = %s", last)
	}
	for _, name := range []string{"derp", "derp-slash", "terminal", "path-app", "path-app-encoded"} {
		a := byName[name].GetRoute()
		if a.GetTimeout().AsDuration() != 0 || a.GetIdleTimeout().AsDuration() != c.UpgradeIdleTimeout {
			t.Errorf("%s timeouts = %s / idle %s, want none / %s", name, a.GetTimeout().AsDuration(), a.GetIdleTimeout().AsDuration(), c.UpgradeIdleTimeout)
		}
	}
	var derpUpgrades []string
	for _, u := range byName["derp"].GetRoute().GetUpgradeConfigs() {
		if u.GetEnabled().GetValue() {
			derpUpgrades = append(derpUpgrades, u.GetUpgradeType())
		}
	}
	if !slices.Equal(derpUpgrades, []string{"derp", "websocket"}) {
		t.Errorf("/derp upgrades = %v", derpUpgrades)
	}
	if !m.GetUseRemoteAddress().GetValue() || m.GetXffNumTrustedHops() != 0 || m.GetSkipXffAppend() {
		t.Errorf("edge trust settings wrong: use_remote_address %v hops %d skip_xff_append %v", m.GetUseRemoteAddress(), m.GetXffNumTrustedHops(), m.GetSkipXffAppend())
	}
}

func TestNoWildcardHost(t *testing.T) {
	c := DefaultConfig()
	c.WildcardHostname = ""
	for _, vh := range hcmOf(t, c).GetRouteConfig().GetVirtualHosts() {
		if vh.GetName() == "apps" {
			t.Fatal("apps virtual host present without a wildcard hostname")
		}
	}
}

// TestExamplesUpToDate fails when envoy/examples differ from the generator;
// run `go generate ./envoy/...` to refresh them.
func TestExamplesUpToDate(t *testing.T) {
	for _, ex := range Examples() {
		want, err := YAML(ex.Config)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("examples", ex.File))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("examples/%s is stale: run go generate ./envoy/...", ex.File)
		}
	}
}

// TestEnvoyValidates runs the real `envoy --mode validate` on every
// checked-in example and on generated variants. Validation loads TLS files,
// so certificate paths are pointed at a freshly generated pair.
func TestEnvoyValidates(t *testing.T) {
	certFile, keyFile := testutil.SelfSignedCert(t, "proxy.example.com", "*.apps.example.com")
	withCert := func(b []byte) []byte {
		s := strings.ReplaceAll(string(b), "/etc/wsedge/tls.crt", certFile)
		return []byte(strings.ReplaceAll(s, "/etc/wsedge/tls.key", keyFile))
	}
	inputs := map[string][]byte{}
	for _, ex := range Examples() {
		b, err := os.ReadFile(filepath.Join("examples", ex.File))
		if err != nil {
			t.Fatal(err)
		}
		inputs["examples/"+ex.File] = withCert(b)
	}
	variants := map[string]func(*Config){
		"plain":       func(*Config) {},
		"tls":         func(c *Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile },
		"no-wildcard": func(c *Config) { c.WildcardHostname = "" },
		"dash-wildcard-with-port": func(c *Config) {
			c.WildcardHostname, c.AccessURLHost = "*--apps.example.com:8443", "[::1]:8443"
		},
		"dns-upstreams-no-cors": func(c *Config) {
			c.AuthzAddr, c.DialerAddr, c.DashboardURL = "localhost:9001", "localhost:9002", ""
		},
		"file-log-trusted-hops": func(c *Config) {
			c.AccessLogPath, c.XFFNumTrustedHops = filepath.Join(t.TempDir(), "access.json"), 1
		},
		"rate-limit": func(c *Config) { c.RateLimit.Requests = 10 },
		"access-log-errors-to-file": func(c *Config) {
			c.AccessLog, c.AccessLogPath = AccessLogErrors, filepath.Join(t.TempDir(), "errors.json")
		},
		"access-log-off": func(c *Config) { c.AccessLog = AccessLogOff },
		"tls-with-http-redirect": func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
			c.RedirectListenAddr = netip.MustParseAddrPort("127.0.0.1:8081")
		},
		"no-fast-path":            func(c *Config) { c.FastPath = false },
		"no-fast-path-rate-limit": func(c *Config) { c.FastPath, c.RateLimit.Requests, c.RateLimit.BeforeAuthz = false, 10, true },
		"fast-path-jwks-by-name":  func(c *Config) { c.AuthzJWKSAddr = "localhost:9003" },
		"rate-limit-no-wildcard": func(c *Config) {
			c.RateLimit.Requests, c.RateLimit.Burst, c.RateLimit.Interval, c.WildcardHostname = 1, 3, 50*time.Millisecond, ""
		},
	}
	for name, edit := range variants {
		c := DefaultConfig()
		edit(&c)
		b, err := YAML(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		inputs["variant "+name] = b
	}
	for name, b := range inputs {
		if out, err := testutil.ValidateEnvoyConfig(t, b); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
}

// TestDropsUnderscoreHeaders: client headers spelt with underscores never
// pass the edge (servers that fold '_' into '-' would read X_Forwarded_For
// as X-Forwarded-For); they are dropped, not refused, so clients that send
// one keep working.
func TestDropsUnderscoreHeaders(t *testing.T) {
	for _, ex := range Examples() {
		m := hcmOf(t, ex.Config)
		if got := m.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); got != corev3.HttpProtocolOptions_DROP_HEADER {
			t.Errorf("%s: headers_with_underscores_action = %v, want DROP_HEADER", ex.File, got)
		}
	}
}

// isWarmTwin reports whether a route name is one of an app route's warm
// twins (warmFirst).
func isWarmTwin(name string) bool {
	for _, s := range []string{"-warm", "-warm-same-origin", "-warm-websocket"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// TestEdgeBufferLimits: every client-facing listener and the dialer's
// cluster buffer at most 32 KiB per connection before Envoy stops reading
// (Envoy's default is 1 MiB); the HTTP/2 limits are checked on the wire
// by e2e TestHTTP2ClientLimits.
func TestEdgeBufferLimits(t *testing.T) {
	for _, ex := range Examples() {
		b, err := Bootstrap(ex.Config)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range b.GetStaticResources().GetListeners() {
			if got := l.GetPerConnectionBufferLimitBytes().GetValue(); got != 32<<10 {
				t.Errorf("%s: listener %s buffers %d bytes per connection, want 32 KiB", ex.File, l.GetName(), got)
			}
		}
		found := false
		for _, c := range b.GetStaticResources().GetClusters() {
			if c.GetName() != DialerCluster {
				continue
			}
			found = true
			if got := c.GetPerConnectionBufferLimitBytes().GetValue(); got != 32<<10 {
				t.Errorf("%s: the dialer's cluster buffers %d bytes per connection, want 32 KiB", ex.File, got)
			}
		}
		if !found {
			t.Errorf("%s: no %s cluster", ex.File, DialerCluster)
		}
	}
}
