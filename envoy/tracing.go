package envoy

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpupstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// OTLPCluster is the OpenTelemetry collector Envoy exports spans to.
const OTLPCluster = "otlp"

// DefaultTraceServiceName is the service.name of Envoy's spans.
const DefaultTraceServiceName = "wsedge-edge"

// Tracing is Envoy's OpenTelemetry tracer: W3C traceparent in and out,
// spans exported over OTLP/gRPC. Off unless OTLPEndpoint is set.
type Tracing struct {
	// OTLPEndpoint is host:port of an OTLP/gRPC collector (plain HTTP/2,
	// as a node-local collector or sidecar listens).
	OTLPEndpoint string
	// SamplePercent is Envoy's random sampling of requests (0–100). A
	// request carrying a traceparent continues that trace.
	SamplePercent float64
	// ServiceName is the service.name of Envoy's spans.
	ServiceName string
}

// Enabled reports whether Envoy traces.
func (t Tracing) Enabled() bool { return t.OTLPEndpoint != "" }

func (t Tracing) validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if !t.Enabled() {
		return nil
	}
	if _, port, err := splitHostPort(t.OTLPEndpoint); err != nil {
		return bad("otlp-endpoint", "%w", err)
	} else if port == 0 {
		return bad("otlp-endpoint", "%q needs a port (4317 is OTLP/gRPC's)", t.OTLPEndpoint)
	}
	if t.SamplePercent < 0 || t.SamplePercent > 100 {
		return bad("trace-sample-percent", "must be between 0 and 100, got %v", t.SamplePercent)
	}
	if t.ServiceName == "" {
		return bad("trace-service-name", "empty")
	}
	return nil
}

// connectionManagerTracing is the HTTP connection manager's tracing block,
// nil when tracing is off. Envoy starts (or continues, from traceparent)
// a span per request; its gRPC calls to ext_authz and ext_proc are child
// spans whose context goes to authz in the call's metadata, and the
// upstream span it spawns for the dialer request is what the dialer's
// request span continues.
func connectionManagerTracing(c Config) *hcmv3.HttpConnectionManager_Tracing {
	t := c.Tracing
	if !t.Enabled() {
		return nil
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling:    &typev3.Percent{Value: t.SamplePercent},
		SpawnUpstreamSpan: wrapperspb.Bool(true),
		// Envoy's own http.url carries the query string, which can hold
		// credentials (the signed app token of a terminal URL, the
		// encrypted API key of the login hand-off): replace it with the
		// URL without the query, as the access log does.
		CustomTags: []*tracingv3.CustomTag{{
			Tag:  "http.url",
			Type: &tracingv3.CustomTag_Value{Value: urlWithoutQuery},
		}},
		Provider: &tracev3.Tracing_Http{
			Name: "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: typed(&tracev3.OpenTelemetryConfig{
				GrpcService: &corev3.GrpcService{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: OTLPCluster}},
				},
				ServiceName: t.ServiceName,
			})},
		},
	}
}

// urlWithoutQuery is the request URL as Envoy's http.url tag spells it
// (scheme from X-Forwarded-Proto, which Envoy sets at the edge), without
// the query string.
const urlWithoutQuery = "%REQ(X-FORWARDED-PROTO)%://%REQ(:AUTHORITY)%%PATH(NQ)%"

// otlpCluster is the collector, spoken to over HTTP/2 (gRPC); nil when
// tracing is off.
func otlpCluster(c Config) *clusterv3.Cluster {
	if !c.Tracing.Enabled() {
		return nil
	}
	cl := staticOrDNSCluster(OTLPCluster, c.Tracing.OTLPEndpoint, c.ConnectTimeout)
	cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		httpProtocolOptionsKey: typed(&httpupstreamv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpupstreamv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpupstreamv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpupstreamv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			}},
		}),
	}
	return cl
}
