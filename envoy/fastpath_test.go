package envoy

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	celexpr "cel.dev/expr"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	actionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

func jwtAuthnOf(t *testing.T, c Config) *jwtauthnv3.JwtAuthentication {
	t.Helper()
	var ja jwtauthnv3.JwtAuthentication
	if err := filterByName(t, hcmOf(t, c), edgewire.JWTAuthnFilter).GetTypedConfig().UnmarshalTo(&ja); err != nil {
		t.Fatal(err)
	}
	return &ja
}

// TestFastPathNames pins the names the rules copy from package tokens.
func TestFastPathNames(t *testing.T) {
	if signedAppTokenCookie != tokens.SignedAppTokenCookie || signedAppTokenQueryParam != tokens.SignedAppTokenQueryParam ||
		smuggledAPIKeyQueryParam != tokens.SmuggledAPIKeyQueryParam {
		t.Fatal("fast path names drifted from package tokens")
	}
}

// TestJWTAuthnProvider checks the provider verifies the token cookie with
// expiry required, coderd's leeway, keys from authz's JWKS through the
// internal cluster (short cache, async fetch), and the payload in metadata.
func TestJWTAuthnProvider(t *testing.T) {
	c := DefaultConfig()
	c.AuthzJWKSAddr = "authz:7003"
	ja := jwtAuthnOf(t, c)
	if len(ja.GetProviders()) != 1 {
		t.Fatalf("providers %v", ja.GetProviders())
	}
	p := ja.GetProviders()[JWTProvider]
	if !slices.Equal(p.GetFromCookies(), []string{"coder_signed_app_token"}) || len(p.GetFromHeaders()) != 0 || len(p.GetFromParams()) != 0 {
		t.Errorf("token sources: cookies %v headers %v params %v", p.GetFromCookies(), p.GetFromHeaders(), p.GetFromParams())
	}
	if !p.GetRequireExpiration() || p.GetClockSkewSeconds() != 60 || p.GetPayloadInMetadata() != edgewire.JWTPayloadKey {
		t.Errorf("require_expiration %v clock skew %d payload %q", p.GetRequireExpiration(), p.GetClockSkewSeconds(), p.GetPayloadInMetadata())
	}
	if len(p.GetIssuer()) != 0 || len(p.GetAudiences()) != 0 {
		t.Errorf("issuer %q audiences %v: coderd's tokens carry neither", p.GetIssuer(), p.GetAudiences())
	}
	rj := p.GetRemoteJwks()
	if rj.GetHttpUri().GetUri() != "http://authz:7003/jwks.json" || rj.GetHttpUri().GetCluster() != JWKSCluster {
		t.Errorf("jwks uri %v", rj.GetHttpUri())
	}
	if d := rj.GetCacheDuration().AsDuration(); d <= 0 || d > 10*time.Second {
		t.Errorf("jwks cache %s: a withdrawn key would verify in Envoy for that long", d)
	}
	if rj.GetAsyncFetch() == nil || rj.GetAsyncFetch().GetFastListener() {
		t.Errorf("async fetch %v: want async, listener waiting for the first fetch", rj.GetAsyncFetch())
	}
	// The token cache is on: a withdrawn key's cached tokens still pass
	// Envoy, and the dialer refuses them (e2e TestFastPathWithdrawnKey).
	if p.GetJwtCacheConfig().GetJwtCacheSize() == 0 {
		t.Error("jwt token cache off: every warm request pays an HS512 verification in Envoy")
	}
}

// TestJWTAuthnRules checks the requests that are never verified (and so
// always meet ext_authz), in order, and that the last rule never rejects.
func TestJWTAuthnRules(t *testing.T) {
	rules := jwtAuthnOf(t, DefaultConfig()).GetRules()
	if len(rules) != 7 {
		t.Fatalf("%d rules: %v", len(rules), rules)
	}
	for i, r := range rules {
		if r.GetMatch().GetPrefix() != "/" {
			t.Errorf("rule %d prefix %q, want every path", i, r.GetMatch().GetPrefix())
		}
		if i < len(rules)-1 && r.GetRequires() != nil {
			t.Errorf("rule %d verifies: %v", i, r)
		}
	}
	query := func(i int) string { return rules[i].GetMatch().GetQueryParameters()[0].GetName() }
	if query(0) != tokens.SmuggledAPIKeyQueryParam || query(1) != tokens.SignedAppTokenQueryParam {
		t.Errorf("query rules %q %q", query(0), query(1))
	}
	hdr := func(i, j int) (string, *matcherv3.StringMatcher) {
		h := rules[i].GetMatch().GetHeaders()[j]
		return h.GetName(), h.GetStringMatch()
	}
	if n, m := hdr(2, 0); n != ":path" || m.GetSafeRegex().GetRegex() != queryKeyEscapedRegex {
		t.Errorf("escaped query key rule %s %v", n, m)
	}
	if n, m := hdr(3, 0); n != ":method" || m.GetExact() != "OPTIONS" || rules[3].GetMatch().GetHeaders()[1].GetName() != "access-control-request-method" {
		t.Errorf("preflight rule %s %v", n, m)
	}
	if n, m := hdr(4, 0); n != ":authority" || m.GetPrefix() != "coder-logout." || !m.GetIgnoreCase() {
		t.Errorf("logout rule %s %v", n, m)
	}
	if n, m := hdr(5, 0); n != "cookie" || m.GetSafeRegex().GetRegex() != coldPathCookieRegex {
		t.Errorf("cold path cookie rule %s %v", n, m)
	}
	any := rules[6].GetRequires().GetRequiresAny().GetRequirements()
	if len(any) != 2 || any[0].GetProviderName() != JWTProvider || any[1].GetAllowMissingOrFailed() == nil {
		t.Errorf("last rule %v: want provider or allow_missing_or_failed", rules[6])
	}
}

// TestExtAuthzSkippedOnlyWhenVerified checks ext_authz runs unless the
// jwt_authn payload is present, and a skipped request is not denied.
func TestExtAuthzSkippedOnlyWhenVerified(t *testing.T) {
	var ea extauthzv3.ExtAuthz
	if err := filterByName(t, hcmOf(t, DefaultConfig()), edgewire.ExtAuthzFilter).GetTypedConfig().UnmarshalTo(&ea); err != nil {
		t.Fatal(err)
	}
	m := ea.GetFilterEnabledMetadata()
	path := m.GetPath()
	if m.GetFilter() != edgewire.JWTAuthnFilter || len(path) != 1 || path[0].GetKey() != edgewire.JWTPayloadKey || !m.GetValue().GetPresentMatch() || !m.GetInvert() {
		t.Errorf("filter_enabled_metadata %v", m)
	}
	if ea.GetDenyAtDisable() != nil {
		t.Errorf("deny_at_disable %v: skipped requests would be denied", ea.GetDenyAtDisable())
	}
}

// TestExtProcOnlyCrossOrigin checks the app-policy ext_proc is skipped for
// requests without an Origin header and for same-origin requests other
// than OPTIONS (the dialer applies the policy; e2e TestSameOriginSkipsExtProc
// runs it through Envoy).
func TestExtProcOnlyCrossOrigin(t *testing.T) {
	f := filterByName(t, hcmOf(t, DefaultConfig()), ExtProcFilter)
	var w matchingv3.ExtensionWithMatcher
	if err := f.GetTypedConfig().UnmarshalTo(&w); err != nil {
		t.Fatal(err)
	}
	ms := w.GetXdsMatcher().GetMatcherList().GetMatchers()
	if len(ms) != 1 {
		t.Fatalf("matchers %v", ms)
	}
	either := ms[0].GetPredicate().GetOrMatcher().GetPredicate()
	if len(either) != 2 {
		t.Fatalf("skip predicate %v, want: no Origin, or same origin", ms[0].GetPredicate())
	}
	single := either[0].GetNotMatcher().GetSinglePredicate()
	var in matcherv3.HttpRequestHeaderMatchInput
	if err := single.GetInput().GetTypedConfig().UnmarshalTo(&in); err != nil || in.GetHeaderName() != "origin" {
		t.Errorf("input %v (%v)", single.GetInput(), err)
	}
	if single.GetValueMatch().GetSafeRegex().GetRegex() != ".*" {
		t.Errorf("value match %v: want any value", single.GetValueMatch())
	}
	same := either[1].GetSinglePredicate()
	if !same.GetInput().GetTypedConfig().MessageIs(&xdsmatcherv3.HttpAttributesCelMatchInput{}) {
		t.Errorf("same-origin input %v, want the request's CEL attributes", same.GetInput())
	}
	var cel xdsmatcherv3.CelMatcher
	if err := same.GetCustomMatch().GetTypedConfig().UnmarshalTo(&cel); err != nil {
		t.Fatal(err)
	}
	const want = "((((request.method != 'OPTIONS') && " +
		"(((request.scheme == 'http') && request.headers['origin'].startsWith('http://')) || ((request.scheme == 'https') && request.headers['origin'].startsWith('https://')))) && " +
		"request.headers['origin'].endsWith(request.host)) && " +
		"(size(request.headers['origin']) == ((size(request.scheme) + 3) + size(request.host))))"
	if got := celSource(t, cel.GetExprMatch().GetCelExprParsed().GetExpr()); got != want {
		t.Errorf("same-origin expression\n%s\nwant\n%s", got, want)
	}
	if !ms[0].GetOnMatch().GetAction().GetTypedConfig().MessageIs(&actionv3.SkipFilter{}) {
		t.Errorf("action %v, want SkipFilter", ms[0].GetOnMatch().GetAction())
	}
	if w.GetExtensionConfig().GetName() != ExtProcFilter {
		t.Errorf("wrapped %q", w.GetExtensionConfig().GetName())
	}
	if !f.GetDisabled() {
		t.Error("enabled by default; app routes must opt in")
	}
}

// celSource writes a parsed CEL expression back as source, every binary
// operator in parentheses; node ids must be unique.
func celSource(t *testing.T, e *celexpr.Expr) string {
	t.Helper()
	seen := map[int64]bool{}
	var src func(*celexpr.Expr) string
	src = func(e *celexpr.Expr) string {
		if seen[e.GetId()] {
			t.Errorf("node id %d twice", e.GetId())
		}
		seen[e.GetId()] = true
		switch k := e.GetExprKind().(type) {
		case *celexpr.Expr_IdentExpr:
			return k.IdentExpr.GetName()
		case *celexpr.Expr_SelectExpr:
			return src(k.SelectExpr.GetOperand()) + "." + k.SelectExpr.GetField()
		case *celexpr.Expr_ConstExpr:
			if v, ok := k.ConstExpr.GetConstantKind().(*celexpr.Constant_Int64Value); ok {
				return fmt.Sprint(v.Int64Value)
			}
			return "'" + k.ConstExpr.GetStringValue() + "'"
		case *celexpr.Expr_CallExpr:
			args := k.CallExpr.GetArgs()
			fn := k.CallExpr.GetFunction()
			if target := k.CallExpr.GetTarget(); target != nil && len(args) == 1 {
				return src(target) + "." + fn + "(" + src(args[0]) + ")"
			}
			if fn == "size" && len(args) == 1 {
				return "size(" + src(args[0]) + ")"
			}
			if fn == "_[_]" && len(args) == 2 {
				return src(args[0]) + "[" + src(args[1]) + "]"
			}
			if op, ok := strings.CutPrefix(fn, "_"); ok && len(args) == 2 {
				return "(" + src(args[0]) + " " + strings.TrimSuffix(op, "_") + " " + src(args[1]) + ")"
			}
		}
		t.Errorf("unexpected node %v", e)
		return "?"
	}
	return src(e)
}

// TestFastPathRoutes checks jwt_authn runs on app routes only: every other
// route (terminal, catch-all, probes, DERP, latency checks, unknown hosts)
// always meets ext_authz or skips it as before.
func TestFastPathRoutes(t *testing.T) {
	m := hcmOf(t, DefaultConfig())
	apps := []string{"subdomain-app", "subdomain-app-preflight", "path-app", "path-app-encoded"}
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a, ok := r.GetTypedPerFilterConfig()[edgewire.JWTAuthnFilter]
			off := false
			if ok {
				var per jwtauthnv3.PerRouteConfig
				var fc routev3.FilterConfig
				if a.UnmarshalTo(&fc) == nil {
					off = fc.GetDisabled() // the warm twins (TestWarmRoutes)
				} else if err := a.UnmarshalTo(&per); err != nil {
					t.Fatal(err)
				} else {
					off = per.GetDisabled()
				}
			}
			if want := !slices.Contains(apps, r.GetName()); off != want {
				t.Errorf("%s/%s: jwt_authn disabled %v, want %v", vh.GetName(), r.GetName(), off, want)
			}
		}
	}
}

// TestJWKSCluster checks the internal JWKS cluster and that no route
// targets it.
func TestJWKSCluster(t *testing.T) {
	for _, tt := range []struct {
		addr string
		kind clusterv3.Cluster_DiscoveryType
	}{{"127.0.0.1:9003", clusterv3.Cluster_STATIC}, {"authz:9003", clusterv3.Cluster_STRICT_DNS}} {
		c := DefaultConfig()
		c.AuthzJWKSAddr = tt.addr
		b, err := Bootstrap(c)
		if err != nil {
			t.Fatal(err)
		}
		var jwks *clusterv3.Cluster
		for _, cl := range b.GetStaticResources().GetClusters() {
			if cl.GetName() == JWKSCluster {
				jwks = cl
			}
		}
		if jwks == nil || jwks.GetType() != tt.kind {
			t.Fatalf("%s: cluster %v", tt.addr, jwks)
		}
		if jwks.GetTypedExtensionProtocolOptions() != nil {
			t.Errorf("%s: protocol options %v: the JWKS is plain HTTP/1.1", tt.addr, jwks.GetTypedExtensionProtocolOptions())
		}
		for _, vh := range hcmOf(t, c).GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetRoute().GetCluster() == JWKSCluster {
					t.Errorf("route %s reaches the JWKS", r.GetName())
				}
			}
		}
	}
}

// TestFastPathRateLimit checks a verified token's user draws from the
// same bucket as authz's rate_limit_key, and that fast-path requests do
// not also match the client bucket's descriptor.
func TestFastPathRateLimit(t *testing.T) {
	_, rl := localRateLimitOf(t, hcmOf(t, rateLimited(nil)), LocalRateLimitFilter)
	var descs [][]string
	for _, d := range rl.GetDescriptors() {
		var es []string
		for _, e := range d.GetEntries() {
			es = append(es, e.GetKey()+"="+e.GetValue())
		}
		descs = append(descs, es)
	}
	want := [][]string{{"user="}, {"user=anonymous", "token_user=anonymous", "masked_remote_address="}}
	if !slices.EqualFunc(descs, want, slices.Equal) {
		t.Errorf("descriptors %v, want %v", descs, want)
	}
	jwtUser := jwtUserAction(RateLimitUserKey, "")
	tokenUser := jwtUserAction(RateLimitTokenUserKey, RateLimitAnonymous)
	rls := rl.GetRateLimits()
	if len(rls) != 3 || len(rls[1].GetActions()) != 3 ||
		!proto.Equal(rls[1].GetActions()[1], tokenUser) || len(rls[2].GetActions()) != 1 || !proto.Equal(rls[2].GetActions()[0], jwtUser) {
		t.Fatalf("rate_limits %v", rls)
	}
	path := jwtUser.GetMetadata().GetMetadataKey().GetPath()
	if jwtUser.GetMetadata().GetMetadataKey().GetKey() != edgewire.JWTAuthnFilter || len(path) != 2 || path[0].GetKey() != edgewire.JWTPayloadKey || path[1].GetKey() != "user_id" {
		t.Errorf("jwt user action %v", jwtUser)
	}
}

// TestFastPathOff checks --fast-path=false gives today's edge: no
// jwt_authn, no JWKS cluster, ext_authz always on, ext_proc unwrapped.
func TestFastPathOff(t *testing.T) {
	c := DefaultConfig()
	c.FastPath = false
	c.AuthzJWKSAddr = "" // not needed without the fast path
	b, err := Bootstrap(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() == JWKSCluster {
			t.Error("JWKS cluster without the fast path")
		}
	}
	m := hcmOf(t, c)
	if slices.Contains(filterNames(m), edgewire.JWTAuthnFilter) {
		t.Error("jwt_authn without the fast path")
	}
	var ea extauthzv3.ExtAuthz
	if err := filterByName(t, m, edgewire.ExtAuthzFilter).GetTypedConfig().UnmarshalTo(&ea); err != nil {
		t.Fatal(err)
	}
	if ea.GetFilterEnabledMetadata() != nil {
		t.Errorf("ext_authz switchable: %v", ea.GetFilterEnabledMetadata())
	}
	if filterByName(t, m, ExtProcFilter).GetTypedConfig().MessageIs(&matchingv3.ExtensionWithMatcher{}) {
		t.Error("ext_proc behind a matcher without the fast path")
	}
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if _, ok := r.GetTypedPerFilterConfig()[edgewire.JWTAuthnFilter]; ok {
				t.Errorf("route %s configures jwt_authn", r.GetName())
			}
		}
	}
}

// TestWarmRoutes checks each app route has its warm twin right in front of
// it — same path match and action, ext_authz and jwt_authn off, no
// app-policy ext_proc — and that nothing else has one: not the terminal,
// the catch-all or the preflight route, and no route at all with a rate
// limit (the per-user bucket needs claims Envoy verified) or without the
// fast path.
func TestWarmRoutes(t *testing.T) {
	// needsOrigin: the route takes only requests with an Origin header.
	needsOrigin := func(r *routev3.Route) bool {
		for _, h := range r.GetMatch().GetHeaders() {
			if strings.EqualFold(h.GetName(), "origin") && h.GetPresentMatch() && !h.GetInvertMatch() {
				return true
			}
		}
		return false
	}
	// Each app route has three warm twins: -warm (no Origin),
	// -warm-same-origin (a browser's same-origin request) and
	// -warm-websocket (any websocket handshake).
	twinSuffixes := []string{"-warm", "-warm-same-origin", "-warm-websocket"}
	warmOf := func(c Config) map[string]*routev3.Route {
		t.Helper()
		out := map[string]*routev3.Route{}
		for _, vh := range hcmOf(t, c).GetRouteConfig().GetVirtualHosts() {
			rs := vh.GetRoutes()
			for i, r := range rs {
				var name, suffix string
				for _, s := range twinSuffixes {
					if n, ok := strings.CutSuffix(r.GetName(), s); ok {
						name, suffix = n, s
					}
				}
				if suffix == "" {
					continue
				}
				// The app route follows; only its other twins and
				// routes that take nothing a warm twin takes (the
				// preflight route: it needs Origin, which -warm refuses,
				// Access-Control-Request-Method, which -warm-same-origin
				// refuses, and OPTIONS, which -warm-websocket refuses)
				// may stand between them.
				j := i + 1
				for j < len(rs) && rs[j].GetName() != name && (needsOrigin(rs[j]) || strings.HasPrefix(rs[j].GetName(), name+"-warm")) {
					j++
				}
				if j == len(rs) || rs[j].GetName() != name {
					t.Errorf("%s/%s is not before %s with only its twin and Origin routes between", vh.GetName(), r.GetName(), name)
					continue
				}
				app := rs[j]
				if !proto.Equal(r.GetRoute(), app.GetRoute()) || r.GetMatch().GetPrefix() != app.GetMatch().GetPrefix() {
					t.Errorf("%s: action or path differs from %s: %v", r.GetName(), name, r)
				}
				out[r.GetName()] = r
			}
		}
		return out
	}
	warm := warmOf(DefaultConfig())
	var wantTwins []string
	for _, app := range []string{"path-app", "path-app-encoded", "subdomain-app"} {
		for _, s := range twinSuffixes {
			wantTwins = append(wantTwins, app+s)
		}
	}
	slices.Sort(wantTwins)
	if got := slices.Sorted(maps.Keys(warm)); !slices.Equal(got, wantTwins) {
		t.Fatalf("warm twins %v, want %v", got, wantTwins)
	}
	for name, r := range warm {
		per := r.GetTypedPerFilterConfig()
		for _, f := range []string{edgewire.JWTAuthnFilter, edgewire.ExtAuthzFilter, corsFilterName, headerMutationFilterName} {
			var fc routev3.FilterConfig
			if per[f].UnmarshalTo(&fc) != nil || !fc.GetDisabled() {
				t.Errorf("%s: %s not off: %v", name, f, per[f])
			}
		}
		if len(per) != 4 {
			t.Errorf("%s configures %d filters, want the four it turns off (no ext_proc)", name, len(per))
		}
		if !slices.Equal(r.GetRequestHeadersToRemove(), []string{edgewire.AppTokenHeader}) {
			t.Errorf("%s removes %v, want authz's token header", name, r.GetRequestHeadersToRemove())
		}
		// The twins that take requests with Origin mark them for the
		// dialer (without Origin it needs no marker).
		add := r.GetRequestHeadersToAdd()
		if strings.HasSuffix(name, "-warm") {
			if len(add) != 0 {
				t.Errorf("%s adds %v, want nothing", name, add)
			}
		} else if len(add) != 1 || add[0].GetHeader().GetKey() != edgewire.WarmRouteHeader ||
			add[0].GetHeader().GetValue() != edgewire.WarmRouteValue || add[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("%s adds %v, want the warm-route marker, overwriting a client's", name, add)
		}
		var hs []string
		for _, h := range r.GetMatch().GetHeaders() {
			m := h.GetStringMatch()
			hs = append(hs, fmt.Sprintf("%s invert=%v %s%s%s%s%v ignoreCase=%v", h.GetName(), h.GetInvertMatch(),
				m.GetSafeRegex().GetRegex(), m.GetPrefix(), m.GetContains(), m.GetExact(), h.GetPresentMatch(), m.GetIgnoreCase()))
		}
		// Its own matchers first (they tell the twins apart), then the
		// ones every twin shares.
		var want []string
		switch {
		case strings.HasSuffix(name, "-same-origin"):
			want = []string{"sec-fetch-site invert=false same-originfalse ignoreCase=false", "access-control-request-method invert=true true ignoreCase=false"}
		case strings.HasSuffix(name, "-websocket"):
			want = []string{"upgrade invert=false websocketfalse ignoreCase=true", ":method invert=false GETfalse ignoreCase=false"}
		default:
			want = []string{"origin invert=true true ignoreCase=false"}
		}
		want = append(want,
			"cookie invert=false coder_signed_app_token=false ignoreCase=false",
			"cookie invert=true wsedge_cold_path=false ignoreCase=false",
			":authority invert=true coder-logout.false ignoreCase=true",
			":path invert=true coder_application_connect_api_key_35e783false ignoreCase=false",
			":path invert=true coder_signed_app_token_23db1ddefalse ignoreCase=false",
			":path invert=true "+queryKeyEscapedRegex+"false ignoreCase=false",
		)
		if !slices.Equal(hs, want) {
			t.Errorf("%s headers\n%s\nwant\n%s", name, strings.Join(hs, "\n"), strings.Join(want, "\n"))
		}
	}
	if w := warmOf(rateLimited(nil)); len(w) != 0 {
		t.Errorf("warm routes with a rate limit: %v", slices.Collect(maps.Keys(w)))
	}
	off := DefaultConfig()
	off.FastPath = false
	if w := warmOf(off); len(w) != 0 {
		t.Errorf("warm routes without the fast path: %v", slices.Collect(maps.Keys(w)))
	}
}

// TestQueryKeyEscapedRegex runs the warm routes' one regex as Envoy does
// (RE2, whole value) on the paths it must tell apart.
func TestQueryKeyEscapedRegex(t *testing.T) {
	re := regexp.MustCompile(`^(?:` + queryKeyEscapedRegex + `)$`)
	for _, tt := range []struct {
		path string
		want bool
	}{
		{"/x?coder%5Fapplication_connect_api_key_35e783=k", true},
		{"/x?a=1&b%20c=2", true},
		{"/x?a=%20", false},
		{"/x%20y?a=1", false},
		{"/x", false},
	} {
		if got := re.MatchString(tt.path); got != tt.want {
			t.Errorf("%q: %v, want %v", tt.path, got, tt.want)
		}
	}
}
