package envoy

import (
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// InternalHeaderPrefix starts the name of every header wsedge components pass
// to each other (e.g. x-wsedge-app-token). Clients never get to send one.
const InternalHeaderPrefix = "x-wsedge-"

// Filter names.
const (
	headerMutationFilterName = "envoy.filters.http.header_mutation"
	corsFilterName           = "envoy.filters.http.cors"
	routerFilterName         = "envoy.filters.http.router"
)

func httpFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(cfg)}}
}

// stripInternalHeadersFilter removes, by prefix, every request header named
// x-wsedge-* before any other filter runs. Route-level
// request_headers_to_remove is not usable: the router applies it after
// ext_authz and would also drop the header authz adds.
func stripInternalHeadersFilter(Config) (*hcmv3.HttpFilter, error) {
	return httpFilter(headerMutationFilterName, &headermutationv3.HeaderMutation{
		Mutations: &headermutationv3.Mutations{
			RequestMutations: []*mutationrulesv3.HeaderMutation{{
				Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{
					KeyMatcher: &matcherv3.StringMatcher{
						MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: InternalHeaderPrefix},
						IgnoreCase:   true,
					},
				}},
			}},
		},
	}), nil
}

// corsFilter answers CORS for the routes that carry a CorsPolicy (the access
// host's non-app routes, see accessCORSPolicy); elsewhere it does nothing.
func corsFilter(Config) (*hcmv3.HttpFilter, error) {
	return httpFilter(corsFilterName, &corsv3.Cors{}), nil
}

// authzAllowedHeaders are the request headers sent to authz: credentials,
// content negotiation, origin and forwarding facts. Host, path, method and
// scheme travel in their own CheckRequest fields.
var authzAllowedHeaders = []string{
	"accept",
	"authorization",
	"coder-session-token",
	"cookie",
	"host",
	"origin",
	"sec-websocket-protocol",
	"user-agent",
	"x-envoy-external-address",
	"x-forwarded-for",
	"x-forwarded-host",
	"x-forwarded-proto",
}

// extAuthzFilter calls wsedge authz over gRPC and fails closed.
func extAuthzFilter(c Config) (*hcmv3.HttpFilter, error) {
	patterns := make([]*matcherv3.StringMatcher, 0, len(authzAllowedHeaders))
	for _, h := range authzAllowedHeaders {
		patterns = append(patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h}, IgnoreCase: true})
	}
	return httpFilter(ExtAuthzFilter, &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzCluster}},
			Timeout:         durationpb.New(c.AuthzTimeout),
		}},
		TransportApiVersion:    corev3.ApiVersion_V3,
		FailureModeAllow:       false,
		StatusOnError:          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		IncludePeerCertificate: false,
		AllowedHeaders:         &matcherv3.ListStringMatcher{Patterns: patterns},
	}), nil
}

// localRateLimitFilter is the hook for issue 5 (per-user local rate limit);
// Config.Validate refuses RateLimit.Enabled until it exists.
func localRateLimitFilter(Config) (*hcmv3.HttpFilter, error) { return nil, nil }

// extProcFilter is the hook for issue 8 (ext_proc on app routes, timeout
// Config.ExtProcTimeout).
func extProcFilter(Config) (*hcmv3.HttpFilter, error) { return nil, nil }

func routerFilter(Config) (*hcmv3.HttpFilter, error) {
	return httpFilter(routerFilterName, &routerv3.Router{}), nil
}
