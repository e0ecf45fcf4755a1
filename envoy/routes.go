package envoy

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
)

// derpUpgrade is the Upgrade token of Tailscale's DERP-over-HTTP.
const derpUpgrade = "derp"

// TerminalPathRegex matches the web terminal path (docs/protocol.md#web-terminal):
// 36 characters where the agent UUID goes. A hex class ([0-9a-fA-F-]{36})
// compiles to an RE2 program of 116 > Envoy's default limit of 100; the route
// only picks long-lived timeouts (ext_authz stays on, and authz checks that the
// path holds a UUID), so the looser class costs nothing.
const TerminalPathRegex = `^/api/v2/workspaceagents/[^/]{36}/pty$`

// routeConfiguration holds the access-URL host, the wildcard app host and a
// fallback for any other Host. Host matching ignores ports (so
// "host:8443" matches "host") and is case-insensitive in Envoy.
func routeConfiguration(c Config) (*routev3.RouteConfiguration, error) {
	access, err := accessVirtualHost(c)
	if err != nil {
		return nil, err
	}
	vhosts := []*routev3.VirtualHost{access}
	if c.WildcardHostname != "" {
		w, err := wildcardVirtualHost(c)
		if err != nil {
			return nil, err
		}
		vhosts = append(vhosts, w)
	}
	vhosts = append(vhosts, fallbackVirtualHost(c))
	for _, vh := range vhosts {
		for _, r := range vh.Routes {
			if r.Name != latencyCheckRouteName {
				r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, requestIDHeader())
			}
		}
	}
	return &routev3.RouteConfiguration{
		Name:                     routeConfig,
		VirtualHosts:             vhosts,
		IgnorePortInHostMatching: true,
		// The dialer's own responses are never to carry an internal header
		// to the browser.
		ResponseHeadersToRemove: []string{edgewire.AppTokenHeader},
	}, nil
}

// accessVirtualHost serves the proxy's access URL: unauthenticated probes and
// DERP, then path apps, the terminal and a checked catch-all.
func accessVirtualHost(c Config) (*routev3.VirtualHost, error) {
	host, _, err := splitHostPort(c.AccessURLHost)
	if err != nil {
		return nil, fmt.Errorf("envoy: access host: %w", err)
	}
	var routes []*routev3.Route
	routes = append(routes, probeRoutes(c)...)
	routes = append(routes, derpRoutes(c)...)
	routes = append(routes, terminalRoute(c))
	routes = append(routes, pathAppRoutes(c)...)
	routes = append(routes, catchAllRoute(c))
	vh := &routev3.VirtualHost{
		Name:    "access",
		Domains: []string{host},
		Routes:  routes,
	}
	if c.DashboardURL != "" {
		p, err := dashboardCORSPolicy(c)
		if err != nil {
			return nil, err
		}
		vh.TypedPerFilterConfig = map[string]*anypb.Any{corsFilterName: typed(p)}
	}
	return vh, nil
}

// wildcardVirtualHost serves subdomain apps: every path of an app host is the
// app's, so one checked route sends everything to the dialer. The one
// exception is /latency-check, which Coder's proxy mounts in front of its
// subdomain-app middleware and so answers on every host.
func wildcardVirtualHost(c Config) (*routev3.VirtualHost, error) {
	domain, err := wildcardDomain(c.WildcardHostname)
	if err != nil {
		return nil, fmt.Errorf("envoy: wildcard host: %w", err)
	}
	app := warmFirst(c, appPolicy(&routev3.Route{
		Name:   "subdomain-app",
		Match:  prefixMatch("/"),
		Action: toDialer(longLived(c)),
	}, false))
	// The warm twin (if any) goes ahead of the preflight route: it takes
	// no request with Origin and the preflight route only such requests,
	// so the order changes no routing, and a warm request is matched
	// against one route fewer (make bench-envoy: ~0.3 % of Envoy's
	// instructions per warm request).
	warm, cold := app[:len(app)-1], app[len(app)-1]
	routes := append([]*routev3.Route{latencyCheckRoute(c)}, warm...)
	return &routev3.VirtualHost{
		Name:    "apps",
		Domains: []string{domain},
		Routes:  append(routes, subdomainPreflightRoute(c), cold),
	}, nil
}

// subdomainPreflightRoute carries CORS preflights to subdomain apps
// (OPTIONS with Origin and Access-Control-Request-Method). The preflight
// ext_proc runs before ext_authz here and answers same-owner preflights;
// what it lets through meets ext_authz and the app policy as on any app
// route.
func subdomainPreflightRoute(c Config) *routev3.Route {
	r := appPolicy(&routev3.Route{
		Name: "subdomain-app-preflight",
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{
				headerIs(":method", exactly("OPTIONS", false), false),
				headerPresent("origin", false),
				headerPresent("access-control-request-method", false),
			},
		},
		Action: toDialer(short(c)),
	}, true)
	r.TypedPerFilterConfig[ExtProcPreflightFilter] = typed(&extprocv3.ExtProcPerRoute{
		Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{ProcessingMode: headersMode(true, false)}},
	})
	if c.RateLimit.Enabled() {
		r.TypedPerFilterConfig[PreflightRateLimitFilter] = typed(preflightRateLimitPerRoute(c))
	}
	return r
}

// appPolicy turns the app-policy ext_proc on for r (it is off elsewhere).
// Only the preflight route sends request headers (a preflight that ext_authz
// let through is answered there); elsewhere the response alone is
// processed, with the request's host, method and Origin as attributes.
func appPolicy(r *routev3.Route, requestHeaders bool) *routev3.Route {
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[ExtProcFilter] = typed(&extprocv3.ExtProcPerRoute{
		Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{ProcessingMode: headersMode(requestHeaders, true)}},
	})
	return r
}

// fallbackVirtualHost answers probes for any other Host (e.g. a load
// balancer checking the pod address) and refuses the rest.
func fallbackVirtualHost(c Config) *routev3.VirtualHost {
	routes := probeRoutes(c)
	routes = append(routes, unchecked(c, &routev3.Route{
		Name:  "unknown-host",
		Match: prefixMatch("/"),
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 421,
			Body:   inlineString("wsedge: unknown host\n"),
		}},
	}))
	return &routev3.VirtualHost{Name: "fallback", Domains: []string{"*"}, Routes: routes}
}

// probeRoutes are the dialer's unauthenticated endpoints (docs/protocol.md#proxy-routes), matched
// exactly so no other path can skip ext_authz.
func probeRoutes(c Config) []*routev3.Route {
	var out []*routev3.Route
	for _, p := range []struct{ name, path string }{
		{"healthz", "/healthz"},
		{"healthz-report", "/healthz-report"},
		{"buildinfo", "/api/v2/buildinfo"},
	} {
		out = append(out, unlimited(c, unchecked(c, &routev3.Route{Name: p.name, Match: exactMatch(p.path), Action: toDialer(short(c))})))
	}
	return append(out, latencyCheckRoute(c))
}

// requestIDHeader gives a response the request's ID, as Coder's proxy
// does: Envoy's x-request-id (the access log's request_id, the ID authz
// and the dialer log), on upstream answers and authz's alike.
func requestIDHeader() *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: coderhttp.RequestIDHeader, Value: "%REQ(X-REQUEST-ID)%"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// latencyCheckRouteName is the dashboard's latency probe on every host:
// Coder mounts it in front of all its middleware, so its answer has no
// request ID either.
const latencyCheckRouteName = "latency-check"

// latencyCheckRoute is the dashboard's latency probe. The dialer answers it
// with wildcard CORS itself, as Coder mounts it outside its CORS middleware.
func latencyCheckRoute(c Config) *routev3.Route {
	r := unlimited(c, unchecked(c, &routev3.Route{Name: latencyCheckRouteName, Match: exactMatch("/latency-check"), Action: toDialer(short(c))}))
	r.TypedPerFilterConfig[corsFilterName] = typed(&routev3.FilterConfig{Disabled: true})
	return r
}

// derpRoutes carry DERP: "Upgrade: DERP" or a websocket with the "derp"
// subprotocol on /derp (and /derp/, which Coder's router serves alike), and
// the DERP latency probe.
func derpRoutes(c Config) []*routev3.Route {
	derp := func() *routev3.Route_Route {
		a := toDialer(longLived(c))
		a.Route.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{
			{UpgradeType: derpUpgrade, Enabled: wrapperspb.Bool(true)},
			{UpgradeType: "websocket", Enabled: wrapperspb.Bool(true)},
		}
		return a
	}
	return []*routev3.Route{
		unlimited(c, unchecked(c, &routev3.Route{Name: "derp", Match: exactMatch("/derp"), Action: derp()})),
		unlimited(c, unchecked(c, &routev3.Route{Name: "derp-slash", Match: exactMatch("/derp/"), Action: derp()})),
		unlimited(c, unchecked(c, &routev3.Route{Name: "derp-latency-check", Match: exactMatch("/derp/latency-check"), Action: toDialer(short(c))})),
	}
}

// terminalRoute is the web terminal websocket (docs/protocol.md#web-terminal); ext_authz on.
func terminalRoute(c Config) *routev3.Route {
	return noFastPath(c, &routev3.Route{
		Name: "terminal",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: TerminalPathRegex},
		}},
		Action: toDialer(longLived(c)),
	})
}

// pathAppRoutes are /@user/... and its mis-encoded twin /%40user/... (docs/protocol.md#path-apps);
// ext_authz and the app policy on.
func pathAppRoutes(c Config) []*routev3.Route {
	return append(
		warmFirst(c, appPolicy(&routev3.Route{Name: "path-app", Match: prefixMatch("/@"), Action: toDialer(longLived(c))}, false)),
		warmFirst(c, appPolicy(&routev3.Route{Name: "path-app-encoded", Match: prefixMatch("/%40"), Action: toDialer(longLived(c))}, false))...)
}

// catchAllRoute sends everything else to the dialer with ext_authz on: authz
// allows what is not an app request untouched and the dialer shows Coder's
// 400 "Head to the Dashboard" page, so the edge needs no copy of that page.
func catchAllRoute(c Config) *routev3.Route {
	return noFastPath(c, &routev3.Route{Name: "catch-all", Match: prefixMatch("/"), Action: toDialer(short(c))})
}

// dashboardCORSPolicy is Coder's CORS for non-subdomain routes (docs/protocol.md#cors):
// only the dashboard origin, GET and OPTIONS, four request headers, no
// credentials; preflights are answered by Envoy.
func dashboardCORSPolicy(c Config) (*corsv3.CorsPolicy, error) {
	o, err := origin(c.DashboardURL)
	if err != nil {
		return nil, fmt.Errorf("envoy: dashboard url: %w", err)
	}
	return &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}, IgnoreCase: true}},
		AllowMethods:           "GET, OPTIONS",
		AllowHeaders:           strings.Join([]string{"Accept", "Content-Type", "X-LATENCY-CHECK", "X-CSRF-TOKEN"}, ", "),
		AllowCredentials:       wrapperspb.Bool(false),
	}, nil
}

// routeTimeouts are a route's total and idle timeouts.
type routeTimeouts struct{ total, idle *durationpb.Duration }

// longLived suits websockets and long downloads: no total timeout, an idle
// timeout instead.
func longLived(c Config) routeTimeouts {
	return routeTimeouts{total: durationpb.New(0), idle: durationpb.New(c.UpgradeIdleTimeout)}
}

func short(c Config) routeTimeouts {
	return routeTimeouts{total: durationpb.New(c.RouteTimeout)}
}

func toDialer(t routeTimeouts) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: DialerCluster},
		Timeout:          t.total,
		IdleTimeout:      t.idle,
	}}
}

// unchecked turns ext_authz (and the fast path's jwt_authn) off for r.
func unchecked(c Config, r *routev3.Route) *routev3.Route {
	r = noFastPath(c, r)
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[edgewire.ExtAuthzFilter] = typed(&extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true},
	})
	return r
}

func exactMatch(path string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}}
}

func prefixMatch(prefix string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
}

func inlineString(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}
