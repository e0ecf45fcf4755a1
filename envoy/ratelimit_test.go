package envoy

import (
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/wsedge/wsedge/edgewire"
)

func rateLimited(edit func(*Config)) Config {
	c := DefaultConfig()
	c.RateLimit.Requests = 120
	if edit != nil {
		edit(&c)
	}
	return c
}

func filterNames(m *hcmv3.HttpConnectionManager) []string {
	var names []string
	for _, f := range m.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	return names
}

func TestRateLimitOffByDefault(t *testing.T) {
	c := DefaultConfig()
	if c.RateLimit.Enabled() {
		t.Fatal("rate limiting on by default")
	}
	m := hcmOf(t, c)
	if slices.Contains(filterNames(m), LocalRateLimitFilter) || slices.Contains(filterNames(m), PreflightRateLimitFilter) {
		t.Errorf("rate limit filters present when off: %v", filterNames(m))
	}
	if n := len(m.GetLocalReplyConfig().GetMappers()); n != 1 {
		t.Errorf("%d local reply mappers when off, want only Retry-After's", n)
	}
	y, err := YAML(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(y), "ratelimit") {
		t.Error("the default bootstrap mentions rate limiting")
	}
}

func TestRateLimitFilterOrder(t *testing.T) {
	want := []string{headerMutationFilterName, corsFilterName, PreflightRateLimitFilter, ExtProcPreflightFilter, edgewire.JWTAuthnFilter, edgewire.ExtAuthzFilter, LocalRateLimitFilter, ExtProcFilter, routerFilterName}
	if got := filterNames(hcmOf(t, rateLimited(nil))); !slices.Equal(got, want) {
		t.Errorf("filters = %v, want %v (the user limiter after ext_authz, the client limiter before the preflight ext_proc)", got, want)
	}
	// Without subdomain apps there is no preflight route (nor its
	// ext_proc) to guard.
	want = slices.DeleteFunc(want, func(n string) bool { return n == PreflightRateLimitFilter || n == ExtProcPreflightFilter })
	if got := filterNames(hcmOf(t, rateLimited(func(c *Config) { c.WildcardHostname = "" }))); !slices.Equal(got, want) {
		t.Errorf("filters without wildcard = %v, want %v", got, want)
	}
}

func localRateLimitOf(t *testing.T, m *hcmv3.HttpConnectionManager, name string) (*hcmv3.HttpFilter, *localratelimitv3.LocalRateLimit) {
	t.Helper()
	f := filterByName(t, m, name)
	var rl localratelimitv3.LocalRateLimit
	if err := f.GetTypedConfig().UnmarshalTo(&rl); err != nil {
		t.Fatal(err)
	}
	return f, &rl
}

// checkEnforced checks what both limiters share.
func checkEnforced(t *testing.T, name string, rl *localratelimitv3.LocalRateLimit, maxKeys uint32) {
	t.Helper()
	for what, p := range map[string]*typev3.FractionalPercent{
		"filter_enabled":  rl.GetFilterEnabled().GetDefaultValue(),
		"filter_enforced": rl.GetFilterEnforced().GetDefaultValue(),
	} {
		if p.GetNumerator() != 100 || p.GetDenominator() != typev3.FractionalPercent_HUNDRED {
			t.Errorf("%s %s = %v, want 100%%", name, what, p)
		}
	}
	if rl.GetStatus().GetCode() != typev3.StatusCode_TooManyRequests || !rl.GetEnableRetryAfterHeader() {
		t.Errorf("%s: status %v, Retry-After %v; want 429 with Retry-After", name, rl.GetStatus(), rl.GetEnableRetryAfterHeader())
	}
	if rl.GetAlwaysConsumeDefaultTokenBucket() == nil || rl.GetAlwaysConsumeDefaultTokenBucket().GetValue() {
		t.Errorf("%s consumes a bucket shared by all keys", name)
	}
	if rl.GetMaxDynamicDescriptors().GetValue() != maxKeys {
		t.Errorf("%s max_dynamic_descriptors = %v, want %d", name, rl.GetMaxDynamicDescriptors(), maxKeys)
	}
	if rl.GetLocalRateLimitPerDownstreamConnection() || rl.GetEnableXRatelimitHeaders() != 0 {
		t.Errorf("%s: per-connection buckets or X-RateLimit headers on app responses", name)
	}
}

func TestUserRateLimitFilter(t *testing.T) {
	for _, tt := range []struct {
		name                 string
		edit                 func(*Config)
		wantMax, wantPerFill uint32
		wantInterval         time.Duration
		wantKeys             uint32
	}{
		{"burst defaults to the rate", nil, 120, 120, time.Minute, 10000},
		{"explicit burst and interval", func(c *Config) {
			c.RateLimit.Burst, c.RateLimit.Interval, c.RateLimit.MaxKeys = 20, 10*time.Second, 50
		}, 20, 120, 10 * time.Second, 50},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The descriptors without the fast path (TestFastPathRateLimit
			// checks what it adds).
			m := hcmOf(t, rateLimited(func(c *Config) {
				c.FastPath = false
				if tt.edit != nil {
					tt.edit(c)
				}
			}))
			f, rl := localRateLimitOf(t, m, LocalRateLimitFilter)
			if f.GetDisabled() {
				t.Fatal("the user limiter must be on by default (routes opt out)")
			}
			checkEnforced(t, LocalRateLimitFilter, rl, tt.wantKeys)
			if rl.GetTokenBucket() != nil {
				t.Errorf("default token bucket %v: all users would share it", rl.GetTokenBucket())
			}
			var descs [][]string
			for _, d := range rl.GetDescriptors() {
				var es []string
				for _, e := range d.GetEntries() {
					es = append(es, e.GetKey()+"="+e.GetValue())
				}
				descs = append(descs, es)
				tb := d.GetTokenBucket()
				if tb.GetMaxTokens() != tt.wantMax || tb.GetTokensPerFill().GetValue() != tt.wantPerFill || tb.GetFillInterval().AsDuration() != tt.wantInterval {
					t.Errorf("descriptor %v bucket %v, want max %d, %d per %s", es, tb, tt.wantMax, tt.wantPerFill, tt.wantInterval)
				}
			}
			// One wildcard bucket per user; one per client address only
			// for requests whose user entry is "anonymous".
			want := [][]string{{"user="}, {"user=anonymous", "masked_remote_address="}}
			if !slices.EqualFunc(descs, want, slices.Equal) {
				t.Errorf("descriptors %v, want %v", descs, want)
			}

			rls := rl.GetRateLimits()
			if len(rls) != 2 || len(rls[0].GetActions()) != 1 || len(rls[1].GetActions()) != 2 {
				t.Fatalf("rate_limits %v", rls)
			}
			for i, def := range []string{"", RateLimitAnonymous} {
				md := rls[i].GetActions()[0].GetMetadata()
				path := md.GetMetadataKey().GetPath()
				if md.GetSource() != routev3.RateLimit_Action_MetaData_DYNAMIC || md.GetMetadataKey().GetKey() != edgewire.ExtAuthzFilter ||
					len(path) != 1 || path[0].GetKey() != "rate_limit_key" || md.GetDescriptorKey() != RateLimitUserKey || md.GetDefaultValue() != def {
					t.Errorf("rate_limits[%d] user action %v, want ext_authz's rate_limit_key, default %q", i, md, def)
				}
			}
			masked := rls[1].GetActions()[1].GetMaskedRemoteAddress()
			if masked.GetV4PrefixMaskLen().GetValue() != 32 || masked.GetV6PrefixMaskLen().GetValue() != 64 {
				t.Errorf("client action %v, want /32 and /64", rls[1].GetActions()[1])
			}
		})
	}
}

// TestRateLimitRoutes checks which routes each limiter covers: the user
// limiter every route except probes, DERP and latency checks; the client
// limiter only the subdomain preflight route.
func TestRateLimitRoutes(t *testing.T) {
	c := rateLimited(func(c *Config) { c.RateLimit.Burst = 7 })
	m := hcmOf(t, c)
	unlimitedRoutes := map[string][]string{}
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if a, ok := r.GetTypedPerFilterConfig()[LocalRateLimitFilter]; ok {
				var fc routev3.FilterConfig
				if err := a.UnmarshalTo(&fc); err != nil || !fc.GetDisabled() {
					t.Errorf("%s/%s: user limiter override %v (%v); only disabling is expected", vh.GetName(), r.GetName(), a, err)
				}
				unlimitedRoutes[vh.GetName()] = append(unlimitedRoutes[vh.GetName()], r.GetName())
			}
			a, ok := r.GetTypedPerFilterConfig()[PreflightRateLimitFilter]
			if ok != (r.GetName() == "subdomain-app-preflight") {
				t.Errorf("%s/%s: preflight limiter configured %v", vh.GetName(), r.GetName(), ok)
			}
			if !ok {
				continue
			}
			var rl localratelimitv3.LocalRateLimit
			if err := a.UnmarshalTo(&rl); err != nil {
				t.Fatal(err)
			}
			checkEnforced(t, PreflightRateLimitFilter, &rl, 10000)
			if len(rl.GetDescriptors()) != 1 || len(rl.GetDescriptors()[0].GetEntries()) != 1 ||
				rl.GetDescriptors()[0].GetEntries()[0].GetKey() != RateLimitClientKey || rl.GetDescriptors()[0].GetEntries()[0].GetValue() != "" {
				t.Errorf("preflight descriptors %v, want one wildcard %s", rl.GetDescriptors(), RateLimitClientKey)
			}
			if rl.GetDescriptors()[0].GetTokenBucket().GetMaxTokens() != 7 || rl.GetTokenBucket().GetMaxTokens() != 7 {
				t.Errorf("preflight buckets %v / %v, want burst 7", rl.GetDescriptors()[0].GetTokenBucket(), rl.GetTokenBucket())
			}
			if len(rl.GetRateLimits()) != 1 || rl.GetRateLimits()[0].GetActions()[0].GetMaskedRemoteAddress() == nil {
				t.Errorf("preflight rate_limits %v, want the masked client address", rl.GetRateLimits())
			}
		}
	}
	want := map[string][]string{
		"access":   {"healthz", "healthz-report", "buildinfo", "latency-check", "derp", "derp-slash", "derp-latency-check"},
		"apps":     {"latency-check"},
		"fallback": {"healthz", "healthz-report", "buildinfo", "latency-check"},
	}
	for vh, names := range want {
		if !slices.Equal(unlimitedRoutes[vh], names) {
			t.Errorf("%s routes without the user limiter = %v, want %v", vh, unlimitedRoutes[vh], names)
		}
	}
	if len(unlimitedRoutes) != len(want) {
		t.Errorf("unlimited routes %v, want %v", unlimitedRoutes, want)
	}
	// The preflight limiter is off unless a route turns it on.
	if f, _ := localRateLimitOf(t, m, PreflightRateLimitFilter); !f.GetDisabled() {
		t.Error("the preflight limiter is on for every route")
	}
}

func TestRateLimitReply(t *testing.T) {
	if got, want := RateLimitMessage(RateLimit{Requests: 512, Interval: time.Minute}),
		`{"message":"You've been rate limited for sending more than 512 requests in 1m0s."}`+"\n"; got != want {
		t.Errorf("message %q, want Coder's %q", got, want)
	}
	c := rateLimited(func(c *Config) { c.RateLimit.Interval = 90 * time.Second })
	mappers := hcmOf(t, c).GetLocalReplyConfig().GetMappers()
	if len(mappers) != 2 {
		t.Fatalf("mappers %v, want the limiter's and Retry-After's", mappers)
	}
	mp := mappers[0]
	var cel celv3.ExpressionFilter
	if err := mp.GetFilter().GetExtensionFilter().GetTypedConfig().UnmarshalTo(&cel); err != nil {
		t.Fatal(err)
	}
	if cel.GetExpression() != "response.code_details == 'local_rate_limited'" {
		t.Errorf("mapper filter %q must match the limiter's replies only", cel.GetExpression())
	}
	if mp.GetStatusCode() != nil {
		t.Errorf("mapper changes the status to %v", mp.GetStatusCode())
	}
	if got := mp.GetBody().GetInlineString(); got != RateLimitMessage(c.RateLimit) || !strings.Contains(got, "120 requests in 1m30s") {
		t.Errorf("body %q", got)
	}
	if got := mp.GetBodyFormatOverride(); got.GetContentType() != "application/json; charset=utf-8" || got.GetTextFormatSource().GetInlineString() != "%LOCAL_REPLY_BODY%" {
		t.Errorf("body format %v", got)
	}
}

// TestClientRateLimitBeforeAuthz: with BeforeAuthz, a limiter keyed by
// client address alone sits just before ext_authz (so requests authz
// denies are counted), with the user limiter's bucket, and is off on the
// unlimited routes only.
func TestClientRateLimitBeforeAuthz(t *testing.T) {
	c := rateLimited(func(c *Config) { c.RateLimit.Burst, c.RateLimit.BeforeAuthz = 9, true })
	m := hcmOf(t, c)
	want := []string{headerMutationFilterName, corsFilterName, PreflightRateLimitFilter, ExtProcPreflightFilter, ClientRateLimitFilter, edgewire.JWTAuthnFilter, edgewire.ExtAuthzFilter, LocalRateLimitFilter, ExtProcFilter, routerFilterName}
	if got := filterNames(m); !slices.Equal(got, want) {
		t.Fatalf("filters = %v, want %v", got, want)
	}
	f, rl := localRateLimitOf(t, m, ClientRateLimitFilter)
	if f.GetDisabled() {
		t.Error("the client limiter is off by default")
	}
	checkEnforced(t, ClientRateLimitFilter, rl, 10000)
	if len(rl.GetDescriptors()) != 1 || len(rl.GetDescriptors()[0].GetEntries()) != 1 || rl.GetDescriptors()[0].GetEntries()[0].GetKey() != RateLimitClientKey {
		t.Errorf("descriptors %v, want one wildcard %s", rl.GetDescriptors(), RateLimitClientKey)
	}
	if b := rl.GetDescriptors()[0].GetTokenBucket(); b.GetMaxTokens() != 9 || b.GetTokensPerFill().GetValue() != 120 {
		t.Errorf("bucket %v, want burst 9 refilled by 120 per interval", b)
	}
	off := map[string]bool{}
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a, ok := r.GetTypedPerFilterConfig()[ClientRateLimitFilter]
			if !ok {
				continue
			}
			var fc routev3.FilterConfig
			if err := a.UnmarshalTo(&fc); err != nil || !fc.GetDisabled() {
				t.Errorf("%s/%s: client limiter override %v (%v); only disabling is expected", vh.GetName(), r.GetName(), a, err)
			}
			off[vh.GetName()+"/"+r.GetName()] = true
		}
	}
	for _, name := range []string{"access/healthz", "access/derp", "access/derp-latency-check", "apps/latency-check", "fallback/healthz"} {
		if !off[name] {
			t.Errorf("client limiter on for %s", name)
		}
	}
	for name := range off {
		if strings.Contains(name, "app") && !strings.HasSuffix(name, "latency-check") {
			t.Errorf("client limiter off for app route %s", name)
		}
	}
	// Without BeforeAuthz there is no client limiter at all.
	if got := filterNames(hcmOf(t, rateLimited(nil))); slices.Contains(got, ClientRateLimitFilter) {
		t.Errorf("filters without BeforeAuthz = %v", got)
	}
}
