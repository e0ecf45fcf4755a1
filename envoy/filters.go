package envoy

import (
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wsedge/wsedge/edgewire"
)

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
						MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: edgewire.InternalHeaderPrefix},
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

// extAuthzFilter calls wsedge authz over gRPC and fails closed.
func extAuthzFilter(c Config) (*hcmv3.HttpFilter, error) {
	patterns := make([]*matcherv3.StringMatcher, 0, len(edgewire.AuthzCheckHeaders))
	for _, h := range edgewire.AuthzCheckHeaders {
		patterns = append(patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h}, IgnoreCase: true})
	}
	return httpFilter(edgewire.ExtAuthzFilter, &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzCluster}},
			Timeout:         durationpb.New(c.AuthzTimeout),
		}},
		TransportApiVersion:    corev3.ApiVersion_V3,
		FailureModeAllow:       false,
		StatusOnError:          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		IncludePeerCertificate: false,
		AllowedHeaders:         &matcherv3.ListStringMatcher{Patterns: patterns},
		// Per-request Check latency (and bytes) in filter state, for the
		// access log's authz_check_us.
		EmitFilterStateStats: true,
		// Fast path: run unless jwt_authn verified the token cookie
		// (deny_at_disable stays false: a skipped request goes on).
		FilterEnabledMetadata: extAuthzEnabled(c),
	}), nil
}

// extAuthzEnabled is nil (always run) without the fast path, else "no
// verified token".
func extAuthzEnabled(c Config) *matcherv3.MetadataMatcher {
	if !c.FastPath {
		return nil
	}
	m := verifiedTokenMatcher()
	m.Invert = true
	return m
}

// Names of the two ext_proc filters (package extproc); the names they
// exchange with it are in package edgewire.
const (
	// ExtProcFilter runs after ext_authz on app routes: app CORS and
	// response policy, reading authz's dynamic metadata.
	ExtProcFilter = "envoy.filters.http.ext_proc"
	// ExtProcPreflightFilter runs before ext_authz on subdomain-app CORS
	// preflights only, which carry no cookies and so cannot pass ext_authz.
	ExtProcPreflightFilter = "wsedge.ext_proc.preflight"
)

// headersMode is an ext_proc processing mode that sends request and/or
// response headers and never bodies or trailers.
func headersMode(request, response bool) *extprocv3.ProcessingMode {
	send := func(b bool) extprocv3.ProcessingMode_HeaderSendMode {
		if b {
			return extprocv3.ProcessingMode_SEND
		}
		return extprocv3.ProcessingMode_SKIP
	}
	return &extprocv3.ProcessingMode{
		RequestHeaderMode:   send(request),
		ResponseHeaderMode:  send(response),
		RequestBodyMode:     extprocv3.ProcessingMode_NONE,
		ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
}

// extProcConfig is one ext_proc filter talking to wsedge authz's gRPC
// server. It fails closed: a processor error or a message that times out
// fails the request with 503 (failure_mode_allow false).
func extProcConfig(c Config, mode *extprocv3.ProcessingMode, statPrefix string, initialMetadata ...*corev3.HeaderValue) *extprocv3.ExternalProcessor {
	return &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzCluster}},
			InitialMetadata: initialMetadata,
		},
		FailureModeAllow: false,
		// 503 like ext_authz: the proxy's own backend is unavailable.
		StatusOnError:  &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		ProcessingMode: mode,
		MessageTimeout: durationpb.New(c.ExtProcTimeout),
		StatPrefix:     statPrefix,
	}
}

// extProcPreflightFilter answers same-owner CORS preflights to subdomain
// apps before ext_authz (see package extproc). It is disabled except on
// the wildcard host's preflight route and sees request headers only.
func extProcPreflightFilter(c Config) (*hcmv3.HttpFilter, error) {
	if c.WildcardHostname == "" {
		return nil, nil
	}
	cfg := extProcConfig(c, headersMode(true, false), "app_preflight",
		&corev3.HeaderValue{Key: edgewire.ExtProcPhaseKey, Value: edgewire.ExtProcPhaseBeforeAuthz})
	f := httpFilter(ExtProcPreflightFilter, cfg)
	f.Disabled = true
	return f, nil
}

// extProcFilter applies the per-app browser policy after ext_authz: it is
// disabled except on app routes (appPolicy), and Envoy forwards it the
// dynamic metadata ext_authz emitted on allow. It sees response headers
// (with the request facts as attributes); request headers only on the
// preflight route, where it answers preflights that ext_authz let through.
func extProcFilter(c Config) (*hcmv3.HttpFilter, error) {
	cfg := extProcConfig(c, headersMode(false, true), "app_policy")
	cfg.ResponseAttributes = []string{edgewire.CodeDetailsAttribute, edgewire.HostAttribute, edgewire.MethodAttribute, edgewire.OriginAttribute}
	namespaces := []string{edgewire.MetadataNamespace}
	if c.FastPath {
		// On the fast path the app facts come from the verified token.
		namespaces = append(namespaces, edgewire.JWTAuthnFilter)
	}
	cfg.MetadataOptions = &extprocv3.MetadataOptions{
		ForwardingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: namespaces},
	}
	var f *hcmv3.HttpFilter
	if c.FastPath {
		// Only cross-origin requests (preflights included) need it; the
		// dialer applies the same response policy to every response.
		f = httpFilter(ExtProcFilter, onlyCrossOrigin(ExtProcFilter, cfg))
	} else {
		f = httpFilter(ExtProcFilter, cfg)
	}
	f.Disabled = true
	return f, nil
}

func routerFilter(c Config) (*hcmv3.HttpFilter, error) {
	r := quietRouter()
	r.DynamicStats = wrapperspb.Bool(c.UpstreamStats)
	return httpFilter(routerFilterName, r), nil
}

// quietRouter is Envoy's router without the x-envoy-* headers it adds by
// default (x-envoy-upstream-service-time on every response,
// x-envoy-overloaded on overload answers, and their kin upstream): Coder's
// proxy sends none of them, and they tell a client what runs the edge.
func quietRouter() *routerv3.Router {
	return &routerv3.Router{SuppressEnvoyHeaders: true}
}
