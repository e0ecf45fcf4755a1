package envoy

import (
	"net/http"
	"time"

	celexpr "cel.dev/expr"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	actionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	"github.com/wsedge/wsedge/edgewire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The warm fast path (Config.FastPath).
//
// Each app route has two warm twins in front of it (warmFirst): a request
// with a coder_signed_app_token cookie and nothing the pipeline treats
// specially, and either no Origin or a browser's Sec-Fetch-Site:
// same-origin (a page calling its own app; never a preflight), goes to the
// dialer with jwt_authn, ext_authz and ext_proc off; the dialer verifies
// the cookie with its own keys, matches it to the request, strips Coder
// cookies, applies the response policy (allowing only the request's own
// origin), and sends what it refuses to authz's Check.
//
// On the app routes themselves Envoy verifies the coder_signed_app_token
// cookie with jwt_authn (HS512, keys from the JWKS that wsedge authz
// serves on an internal listener). A verified payload lands in dynamic
// metadata, and:
//
//   - ext_authz is skipped (filter_enabled_metadata, inverted): a request
//     whose cookie did not verify — missing, expired, forged, signed by a
//     key Envoy does not know yet — meets ext_authz exactly as before;
//     jwt_authn never rejects a request by itself (allow_missing_or_failed);
//   - requests today's pipeline treats specially are never verified, so they
//     always take ext_authz: the smuggled-key and token query parameters
//     (and any query key with a %-escape, which Go decodes and Envoy's
//     matcher does not), CORS preflights and coder-logout hosts by rule;
//     the terminal, DERP, probes and the catch-all by route;
//   - the app-policy ext_proc runs only for cross-origin requests
//     (ExtensionWithMatcher + SkipFilter: no Origin, or an Origin that is
//     the request's own scheme://host, skips it), reading the verified
//     claims; the dialer applies the same response policy to every
//     response (see package extproc);
//   - with a rate limit there are no warm twins, and the per-user limit
//     reads the verified token's user_id, the value authz emits as
//     rate_limit_key, so a user has one bucket on both paths.
//
// The dialer is the enforcement point: it re-verifies the cookie, matches
// it to the request, strips Coder cookies and refuses withdrawn keys
// (docs/architecture.md#two-paths-through-envoy).

// jwtCacheSize is how many verified tokens each Envoy worker keeps (a
// token lives a minute: a few per active user and app).
const jwtCacheSize = 4096

// Names of the fast path's parts.
const (
	// JWTProvider is the one jwt_authn provider.
	JWTProvider = "wsedge"
	// JWTFailureKey is the metadata key of the reason a token failed
	// (logs only).
	JWTFailureKey = "jwt_failure"
	// JWKSCluster is wsedge authz's internal JWKS listener. No route
	// targets it: only jwt_authn's fetches reach it.
	JWKSCluster = "authz_jwks"
	// JWKSPath is where authz serves the JWKS.
	JWKSPath = "/jwks.json"
	// SignedAppTokenCookie and the query parameters the rules look at
	// (tokens.SignedAppTokenCookie, SignedAppTokenQueryParam,
	// SmuggledAPIKeyQueryParam).
	signedAppTokenCookie     = "coder_signed_app_token"
	signedAppTokenQueryParam = "coder_signed_app_token_23db1dde"
	smuggledAPIKeyQueryParam = "coder_application_connect_api_key_35e783"
	// logoutHostPrefix starts Coder's logout hosts (appurl.KindLogout).
	logoutHostPrefix = "coder-logout."
)

// Fast path timing.
const (
	// jwksCacheDuration bounds how long Envoy lags a key rotation or
	// withdrawal (the dialer refuses withdrawn keys at once).
	jwksCacheDuration = 5 * time.Second
	// jwksRetry is how soon a failed JWKS fetch is retried; Envoy keeps
	// the last good key set meanwhile.
	jwksRetry = time.Second
	// jwksFetchTimeout bounds one JWKS fetch.
	jwksFetchTimeout = time.Second
	// jwtClockSkew matches the tokens package's leeway (one minute).
	jwtClockSkew = 60
)

// queryKeyEscapedRegex matches a :path whose query has a key with a
// %-escape (Go decodes escapes in keys, Envoy's query matcher does not).
// Envoy's safe_regex is a full match.
const queryKeyEscapedRegex = `^[^?]*\?([^&]*&)*[^=&]*%.*`

// coldPathCookieRegex matches a Cookie header holding edgewire.ColdPathCookie
// (HTTP/2 cookie crumbs are joined with ", " when matched).
const coldPathCookieRegex = `(.*[;,] *)?` + edgewire.ColdPathCookie + `=.*`

// jwtAuthnFilter verifies the signed app token cookie on app routes,
// never refusing a request itself.
func jwtAuthnFilter(c Config) (*hcmv3.HttpFilter, error) {
	if !c.FastPath {
		return nil, nil
	}
	prefix := &routev3.RouteMatch_Prefix{Prefix: "/"}
	skip := func(m *routev3.RouteMatch) *jwtauthnv3.RequirementRule {
		m.PathSpecifier = prefix
		return &jwtauthnv3.RequirementRule{Match: m}
	}
	queryPresent := func(name string) *routev3.RouteMatch {
		return &routev3.RouteMatch{QueryParameters: []*routev3.QueryParameterMatcher{{
			Name: name, QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true},
		}}}
	}
	return httpFilter(edgewire.JWTAuthnFilter, &jwtauthnv3.JwtAuthentication{
		Providers: map[string]*jwtauthnv3.JwtProvider{JWTProvider: {
			FromCookies: []string{signedAppTokenCookie},
			// Envoy leaves cookies in place whatever this says; the
			// dialer strips Coder cookies from upstream requests.
			Forward:                true,
			RequireExpiration:      true,
			ClockSkewSeconds:       jwtClockSkew,
			PayloadInMetadata:      edgewire.JWTPayloadKey,
			FailedStatusInMetadata: JWTFailureKey,
			// Verified tokens are cached (HS512 per request is most of
			// jwt_authn's cost). A cached token of a key the primary has
			// withdrawn still passes Envoy until it expires; the dialer,
			// which verifies every token with its own current keys, refuses
			// it and asks authz, so the cache never lets it reach an app.
			JwtCacheConfig: &jwtauthnv3.JwtCacheConfig{JwtCacheSize: jwtCacheSize},
			JwksSourceSpecifier: &jwtauthnv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtauthnv3.RemoteJwks{
				HttpUri: &corev3.HttpUri{
					Uri:              "http://" + c.AuthzJWKSAddr + JWKSPath,
					HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: JWKSCluster},
					Timeout:          durationpb.New(jwksFetchTimeout),
				},
				CacheDuration: durationpb.New(jwksCacheDuration),
				AsyncFetch:    &jwtauthnv3.JwksAsyncFetch{FailedRefetchDuration: durationpb.New(jwksRetry)},
			}},
		}},
		// First match wins; a rule without requirement verifies nothing.
		Rules: []*jwtauthnv3.RequirementRule{
			skip(queryPresent(smuggledAPIKeyQueryParam)),
			skip(queryPresent(signedAppTokenQueryParam)),
			skip(&routev3.RouteMatch{Headers: []*routev3.HeaderMatcher{headerIs(":path", regex(queryKeyEscapedRegex), false)}}),
			skip(&routev3.RouteMatch{Headers: []*routev3.HeaderMatcher{
				headerIs(":method", exactly("OPTIONS", false), false),
				headerPresent("access-control-request-method", false),
			}}),
			skip(&routev3.RouteMatch{Headers: []*routev3.HeaderMatcher{headerIs(":authority", prefixed(logoutHostPrefix, true), false)}}),
			skip(&routev3.RouteMatch{Headers: []*routev3.HeaderMatcher{headerIs("cookie", regex(coldPathCookieRegex), false)}}),
			{
				Match: &routev3.RouteMatch{PathSpecifier: prefix},
				RequirementType: &jwtauthnv3.RequirementRule_Requires{Requires: &jwtauthnv3.JwtRequirement{
					RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{RequiresAny: &jwtauthnv3.JwtRequirementOrList{
						Requirements: []*jwtauthnv3.JwtRequirement{
							{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: JWTProvider}},
							{RequiresType: &jwtauthnv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}},
						},
					}},
				}},
			},
		},
	}), nil
}

// jwksCluster is authz's internal JWKS listener (plain HTTP/1.1).
func jwksCluster(c Config) *clusterv3.Cluster {
	return staticOrDNSCluster(JWKSCluster, c.AuthzJWKSAddr, c.ConnectTimeout)
}

// verifiedTokenMatcher matches requests whose token jwt_authn verified.
func verifiedTokenMatcher() *matcherv3.MetadataMatcher {
	return &matcherv3.MetadataMatcher{
		Filter: edgewire.JWTAuthnFilter,
		Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: edgewire.JWTPayloadKey}}},
		Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}},
	}
}

// onlyCrossOrigin wraps a filter so that Envoy skips it (both directions)
// for requests without an Origin header and for same-origin requests
// other than OPTIONS: an Origin that is exactly the request's own scheme
// and host (a page of the app calling itself: POSTs, websockets). The
// dialer applies the app response policy to every app response, and it
// allows a same-host origin itself (the token it matched to the host names
// the owner, so no owner lookup is needed); only a cross-origin request
// needs ext_proc, which asks the primary who owns the origin's app.
// Preflights always meet it. Per-route settings still address the filter
// by its HCM name.
func onlyCrossOrigin(name string, inner proto.Message) *matchingv3.ExtensionWithMatcher {
	hasOrigin := &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{
		SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
			Input: &xdscorev3.TypedExtensionConfig{Name: "origin", TypedConfig: typed(&matcherv3.HttpRequestHeaderMatchInput{HeaderName: "origin"})},
			Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{ValueMatch: &xdsmatcherv3.StringMatcher{
				// A prefix "" is refused (min length): any value, empty too.
				MatchPattern: &xdsmatcherv3.StringMatcher_SafeRegex{SafeRegex: &xdsmatcherv3.RegexMatcher{
					EngineType: &xdsmatcherv3.RegexMatcher_GoogleRe2{GoogleRe2: &xdsmatcherv3.RegexMatcher_GoogleRE2{}},
					Regex:      ".*",
				}},
			}},
		},
	}}
	sameOrigin := &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{
		SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
			Input: &xdscorev3.TypedExtensionConfig{Name: "request", TypedConfig: typed(&xdsmatcherv3.HttpAttributesCelMatchInput{})},
			Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_CustomMatch{CustomMatch: &xdscorev3.TypedExtensionConfig{
				Name: "same-origin", TypedConfig: typed(&xdsmatcherv3.CelMatcher{
					ExprMatch:   &xdstypev3.CelExpression{CelExprParsed: sameOriginCEL()},
					Description: "an Origin that is the request's own scheme and host, not a preflight",
				}),
			}},
		},
	}}
	skip := &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_OrMatcher{
		OrMatcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_PredicateList{Predicate: []*xdsmatcherv3.Matcher_MatcherList_Predicate{
			{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_NotMatcher{NotMatcher: hasOrigin}},
			sameOrigin,
		}},
	}}
	return &matchingv3.ExtensionWithMatcher{
		XdsMatcher: &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherList_{MatcherList: &xdsmatcherv3.Matcher_MatcherList{
			Matchers: []*xdsmatcherv3.Matcher_MatcherList_FieldMatcher{{
				Predicate: skip,
				OnMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: &xdscorev3.TypedExtensionConfig{
					Name: "skip-unless-cross-origin", TypedConfig: typed(&actionv3.SkipFilter{}),
				}}},
			}},
		}}},
		ExtensionConfig: &corev3.TypedExtensionConfig{Name: name, TypedConfig: typed(inner)},
	}
}

// sameOriginCEL is, as the parsed CEL expression Envoy 1.40's matcher
// takes (it parses no source text, and its CEL has no string
// concatenation, so the comparison is spelled by prefix, suffix and
// length),
//
//	request.method != 'OPTIONS' &&
//	  (request.scheme == 'http' && request.headers['origin'].startsWith('http://') ||
//	   request.scheme == 'https' && request.headers['origin'].startsWith('https://')) &&
//	  request.headers['origin'].endsWith(request.host) &&
//	  size(request.headers['origin']) == size(request.scheme) + 3 + size(request.host)
//
// which is true exactly when the Origin is the request's own
// scheme://host, byte for byte, and it is not an OPTIONS request. A
// missing Origin is an evaluation error, which matches nothing; several
// Origin headers are joined by Envoy and never match.
func sameOriginCEL() *celexpr.ParsedExpr {
	var id int64
	node := func(e *celexpr.Expr) *celexpr.Expr { id++; e.Id = id; return e }
	attr := func(name string) *celexpr.Expr {
		request := node(&celexpr.Expr{ExprKind: &celexpr.Expr_IdentExpr{IdentExpr: &celexpr.Expr_Ident{Name: "request"}}})
		return node(&celexpr.Expr{ExprKind: &celexpr.Expr_SelectExpr{SelectExpr: &celexpr.Expr_Select{Operand: request, Field: name}}})
	}
	str := func(v string) *celexpr.Expr {
		return node(&celexpr.Expr{ExprKind: &celexpr.Expr_ConstExpr{ConstExpr: &celexpr.Constant{ConstantKind: &celexpr.Constant_StringValue{StringValue: v}}}})
	}
	num := func(v int64) *celexpr.Expr {
		return node(&celexpr.Expr{ExprKind: &celexpr.Expr_ConstExpr{ConstExpr: &celexpr.Constant{ConstantKind: &celexpr.Constant_Int64Value{Int64Value: v}}}})
	}
	call := func(fn string, args ...*celexpr.Expr) *celexpr.Expr {
		return node(&celexpr.Expr{ExprKind: &celexpr.Expr_CallExpr{CallExpr: &celexpr.Expr_Call{Function: fn, Args: args}}})
	}
	method := func(target *celexpr.Expr, fn string, arg *celexpr.Expr) *celexpr.Expr {
		return node(&celexpr.Expr{ExprKind: &celexpr.Expr_CallExpr{CallExpr: &celexpr.Expr_Call{Target: target, Function: fn, Args: []*celexpr.Expr{arg}}}})
	}
	origin := func() *celexpr.Expr { return call("_[_]", attr("headers"), str("origin")) }
	scheme := func(s string) *celexpr.Expr {
		return call("_&&_", call("_==_", attr("scheme"), str(s)), method(origin(), "startsWith", str(s+"://")))
	}
	length := call("_==_", call("size", origin()),
		call("_+_", call("_+_", call("size", attr("scheme")), num(int64(len("://")))), call("size", attr("host"))))
	all := call("_&&_",
		call("_&&_",
			call("_&&_", call("_!=_", attr("method"), str(http.MethodOptions)), call("_||_", scheme("http"), scheme("https"))),
			method(origin(), "endsWith", attr("host"))),
		length)
	return &celexpr.ParsedExpr{Expr: all}
}

// jwtUserAction reads the verified token's user_id into key; without a
// verified token it yields def, or skips the descriptor when def is empty.
func jwtUserAction(key, def string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
		DescriptorKey: key,
		MetadataKey: &metadatav3.MetadataKey{
			Key: edgewire.JWTAuthnFilter,
			Path: []*metadatav3.MetadataKey_PathSegment{
				{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: edgewire.JWTPayloadKey}},
				{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: "user_id"}},
			},
		},
		DefaultValue: def,
		Source:       routev3.RateLimit_Action_MetaData_DYNAMIC,
	}}}
}

// RateLimitTokenUserKey is the descriptor key of the client bucket's
// descriptor that holds the verified token's user (RateLimitAnonymous
// without one), so fast-path requests of a user never draw from their
// client's bucket.
const RateLimitTokenUserKey = "token_user"

// noFastPath turns jwt_authn off for r (every route that is not an app
// route), so its requests always meet ext_authz (or skip it, as before).
func noFastPath(c Config, r *routev3.Route) *routev3.Route {
	if !c.FastPath {
		return r
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[edgewire.JWTAuthnFilter] = typed(&jwtauthnv3.PerRouteConfig{
		RequirementSpecifier: &jwtauthnv3.PerRouteConfig_Disabled{Disabled: true},
	})
	return r
}

// warmFirst puts the app route's warm twins in front of it (Config.FastPath
// without a rate limit): a request that carries a coder_signed_app_token
// cookie, no Origin (or a browser's same-origin mark, or a websocket
// handshake: see the twins below), and nothing the pipeline treats specially (the
// smuggled-key or token query parameter, a %-escaped query key, a logout
// host, the cold-path cookie) goes to the dialer with jwt_authn, ext_authz
// and ext_proc off. The dialer is the one that verifies its token — with
// the keys it holds now — matches it to the request and applies the
// response policy; a token it refuses sends it to authz with the Check
// Envoy would have made (docs/architecture.md#two-paths-through-envoy).
// Verifying the token in Envoy too would cost Envoy more than its whole
// router (measured: make bench-reference) for a check the dialer repeats.
//
// Everything else takes the app route itself, as without the fast path
// except that jwt_authn verifies the cookies of the requests with Origin no
// twin takes, cross-origin ones mostly (the app-policy ext_proc reads the
// verified claims). With a rate limit, the
// per-user bucket needs claims Envoy verified: there is no warm twin and
// jwt_authn verifies every app request's cookie.
func warmFirst(c Config, app *routev3.Route) []*routev3.Route {
	if !c.FastPath || c.RateLimit.Enabled() {
		return []*routev3.Route{app}
	}
	// The matchers only choose who checks the token: whatever the warm
	// route lets through, the dialer verifies, and sends to authz what it
	// refuses (a name in the Cookie header that is no readable token
	// cookie included). So plain substring tests do, leaning cold: any
	// mention of the cold-path cookie or of either query parameter in the
	// path takes the app route (measured: Envoy CPU/request ~2 % below the
	// same tests as anchored regexes).
	common := []*routev3.HeaderMatcher{
		headerIs("cookie", containing(signedAppTokenCookie+"="), false),
		headerIs("cookie", containing(edgewire.ColdPathCookie+"="), true),
		headerIs(":authority", prefixed(logoutHostPrefix, true), true),
		headerIs(":path", containing(smuggledAPIKeyQueryParam), true),
		headerIs(":path", containing(signedAppTokenQueryParam), true),
		headerIs(":path", regex(queryKeyEscapedRegex), true),
	}
	// A twin's own matchers come first: they tell the twins apart, so a
	// request meant for another twin (or the app route) fails at once.
	withMatchers := func(own ...*routev3.HeaderMatcher) *routev3.RouteMatch {
		m := proto.Clone(app.Match).(*routev3.RouteMatch)
		m.Headers = append(append(m.Headers, own...), common...)
		return m
	}
	// Disabled this way Envoy does not even create the filters for the
	// request (measured: Envoy CPU/request 1.28× → 1.16–1.21× the minimal
	// Envoy's at c=8). The header filter's one job that matters here —
	// no client copy of authz's token header reaches the dialer — is the
	// route's.
	off := map[string]*anypb.Any{}
	for _, f := range []string{edgewire.JWTAuthnFilter, edgewire.ExtAuthzFilter, corsFilterName, headerMutationFilterName} {
		off[f] = typed(&routev3.FilterConfig{Disabled: true})
	}
	twin := func(name string, match *routev3.RouteMatch) *routev3.Route {
		return &routev3.Route{
			Name:                   name,
			Match:                  match,
			Action:                 &routev3.Route_Route{Route: proto.Clone(app.GetRoute()).(*routev3.RouteAction)},
			TypedPerFilterConfig:   off,
			RequestHeadersToRemove: []string{edgewire.AppTokenHeader},
		}
	}
	// No ext_proc sees a warm twin's answer, so the dialer may ask authz
	// about a token it refuses even with Origin; the twin that takes
	// requests with Origin says so (without Origin the dialer asks anyway,
	// and the header costs Envoy ~1 % of a warm request: make bench-envoy).
	marked := func(r *routev3.Route) *routev3.Route {
		r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: edgewire.WarmRouteHeader, Value: edgewire.WarmRouteValue},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}}
		return r
	}
	// A browser marks a page's requests to its own origin (its POSTs,
	// fetches and websockets, which carry Origin) Sec-Fetch-Site:
	// same-origin, a header no page can set. Such a request needs no
	// owner lookup for its CORS answer (the dialer allows the request's
	// own host; any other Origin gets no allowance there), so it is as
	// warm as one without Origin. A client that forges the header only
	// chooses the dialer's checks, as every warm request does. Never a
	// preflight (those meet the preflight route and ext_proc).
	//
	// Chromium sends no Sec-Fetch-* with a websocket handshake, only
	// Origin, and a websocket is no CORS request: a browser reads no
	// Access-Control-* header of a 101, and whether the handshake is
	// allowed depends on the token alone, on every route. So every
	// websocket handshake (a GET asking to switch to websocket; Envoy
	// presents an HTTP/2 extended CONNECT so too) is warm, whatever its
	// Origin: an idle browser websocket then holds no jwt_authn state in
	// Envoy (measured: 66.8 → 55.7 KB per session, make bench-reference).
	// The dialer allows the 101 only for the page's own origin; a
	// cross-origin 101 lacks the allowance ext_proc's owner lookup would
	// have added for another app of the same owner, which no browser reads.
	return []*routev3.Route{
		twin(app.Name+"-warm", withMatchers(headerPresent("origin", true))),
		marked(twin(app.Name+"-warm-same-origin", withMatchers(
			headerIs("sec-fetch-site", exactly("same-origin", false), false),
			headerPresent("access-control-request-method", true),
		))),
		marked(twin(app.Name+"-warm-websocket", withMatchers(
			headerIs("upgrade", exactly("websocket", true), false),
			headerIs(":method", exactly(http.MethodGet, false), false),
		))),
		app,
	}
}

// Header matchers of the route table and jwt_authn's rules. invert: the
// request matches when the header does not (or is absent).

func headerIs(name string, m *matcherv3.StringMatcher, invert bool) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, InvertMatch: invert, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}
}

func headerPresent(name string, invert bool) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, InvertMatch: invert, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
}

func exactly(v string, ignoreCase bool) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}, IgnoreCase: ignoreCase}
}

func prefixed(v string, ignoreCase bool) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v}, IgnoreCase: ignoreCase}
}

func containing(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: v}}
}

func regex(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}
