package envoy

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// RedirectListenerName is the plain-HTTP listener that sends browsers to
// HTTPS (Config.RedirectListenAddr).
const RedirectListenerName = "edge-http-redirect"

// redirectListener answers every plain-HTTP request with a 301 to the same
// URL on https (default port), so http:// links to the access URL and app
// hosts keep working when the edge terminates TLS. Nothing is forwarded:
// no app, token or cookie is ever seen on plain HTTP.
func redirectListener(c Config) *listenerv3.Listener {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix:            "edge_http_redirect",
		CodecType:             hcmv3.HttpConnectionManager_AUTO,
		UseRemoteAddress:      wrapperspb.Bool(true),
		RequestHeadersTimeout: durationpb.New(c.RequestHeadersTimeout),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: RedirectListenerName,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "https-redirect",
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "https-redirect",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
						SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
						ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY,
					}},
				}},
			}},
		}},
		HttpFilters:                []*hcmv3.HttpFilter{httpFilter(routerFilterName, quietRouter())},
		ServerHeaderTransformation: hcmv3.HttpConnectionManager_PASS_THROUGH,
	}
	return &listenerv3.Listener{
		Name:                          RedirectListenerName,
		Address:                       socketAddress(c.RedirectListenAddr.Addr().String(), uint32(c.RedirectListenAddr.Port())),
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(edgeBufferLimit),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(m)},
		}}}},
	}
}
