package envoy

import (
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpupstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	upstreamIdleTimeout    = 50 * time.Second
)

// authzCluster is wsedge authz, spoken to over HTTP/2 (gRPC).
func authzCluster(c Config) *clusterv3.Cluster {
	cl := staticOrDNSCluster(AuthzCluster, c.AuthzAddr, c.ConnectTimeout)
	cl.CircuitBreakers = authzCircuitBreakers(c)
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

// dialerCluster is wsedge dialer over HTTP/1.1: websocket and DERP upgrades
// are HTTP/1.1 upgrades end to end, and it is the cheaper protocol for both
// ends. Measured with this cluster on h2c instead (the dialer serves both;
// BenchmarkWarmPathVsReference, two runs): CPU per warm request 1.20–1.23×
// the reference at c=1 (Envoy 1.25×, dialer 1.18×) and 1.15–1.20× at c=8,
// req/s 0.87–0.92×, against 1.05–1.07× and 0.96–0.97× over HTTP/1.1.
// Nor do websockets pay for an HTTP/2 cluster of their own, though Envoy
// would turn each upgrade into an extended CONNECT stream and save its
// upstream connection: measured with the minimal Envoy, 500 idle
// websockets, its heap per websocket drops from 52 to 39 KB (47 to 35 KB
// for browsers on TLS HTTP/2), but Go's HTTP/2 server keeps the stream's
// handler goroutine (4 KB of stack), its 4 KiB response buffer and body
// pipe alive, about 12 KB per websocket where a hijacked HTTP/1.1
// connection leaves 1 KB. The memory would move, not shrink, every idle
// websocket would hold a goroutine again, and Go 1.26 serves extended
// CONNECT only under GODEBUG=http2xconnect=1.
func dialerCluster(c Config) *clusterv3.Cluster {
	cl := staticOrDNSCluster(DialerCluster, c.DialerAddr, c.ConnectTimeout)
	cl.CircuitBreakers = dialerCircuitBreakers(c)
	cl.PerConnectionBufferLimitBytes = wrapperspb.UInt32(edgeBufferLimit)
	cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		httpProtocolOptionsKey: typed(&httpupstreamv3.HttpProtocolOptions{
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
				// Below Go's usual server idle timeouts, so Envoy does not
				// reuse a connection the dialer is closing.
				IdleTimeout: durationpb.New(upstreamIdleTimeout),
			},
			UpstreamProtocolOptions: &httpupstreamv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpupstreamv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpupstreamv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
					HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
				},
			}},
		}),
	}
	return cl
}

// staticOrDNSCluster is a one-endpoint cluster: STATIC for an IP literal,
// STRICT_DNS for a name (docker compose, Kubernetes services).
func staticOrDNSCluster(name, hostport string, connectTimeout time.Duration) *clusterv3.Cluster {
	host, port, _ := splitHostPort(hostport) // validated by Config.Validate
	kind := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		kind = clusterv3.Cluster_STATIC
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: kind},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: socketAddress(host, uint32(port)),
					}},
				}},
			}},
		},
	}
}
