package authz

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/wsedge/wsedge/tokens"
)

// noopAuthorization allows everything without looking: the cost of gRPC and
// protobuf alone, the baseline Check latency is compared with.
type noopAuthorization struct {
	authv3.UnimplementedAuthorizationServer
}

func (noopAuthorization) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}

// startCheckServer serves an Authorization server on loopback and returns
// a client for it.
func startCheckServer(b *testing.B, register func(*grpc.Server)) authv3.AuthorizationClient {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	register(g)
	go func() { _ = g.Serve(ln) }()
	b.Cleanup(g.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cc.Close() })
	return authv3.NewAuthorizationClient(cc)
}

// warmCheckRequest is what Envoy sends for a subdomain app request that
// carries a valid signed-token cookie.
func warmCheckRequest(cookie string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "bench", Method: "GET", Scheme: "https",
			Host: "code--main--dev--alice.apps.example.com", Path: "/index.html?x=1",
			Headers: map[string]string{
				":authority": "code--main--dev--alice.apps.example.com",
				":path":      "/index.html?x=1",
				"cookie":     "theme=dark; " + tokens.SignedAppTokenCookie + "=" + cookie + "; z=1",
				"user-agent": "bench",
				"accept":     "text/html",
			},
		}},
	}}
}

// BenchmarkCheckWarmCookie compares a Check for a request with a valid
// token cookie (no primary call) with a no-op Authorization server, both
// over loopback gRPC, one call to each per iteration so machine noise hits
// both alike. It reports p50/p99 per server and their p99 ratio.
func BenchmarkCheckWarmCookie(b *testing.B) {
	f := newFixture(b, nil)
	tok := f.sign(b, subReq, nil)
	real := startCheckServer(b, func(g *grpc.Server) {
		authv3.RegisterAuthorizationServer(g, &grpcServer{svc: f.svc, metrics: newMetrics(nil)})
	})
	noop := startCheckServer(b, func(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, noopAuthorization{}) })
	req := warmCheckRequest(tok)
	ctx := context.Background()
	call := func(c authv3.AuthorizationClient) time.Duration {
		start := time.Now()
		resp, err := c.Check(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if resp.GetOkResponse() == nil {
			b.Fatalf("not allowed: %v", resp)
		}
		return time.Since(start)
	}
	call(real) // warm the verified-token cache and both connections
	call(noop)
	var realLat, noopLat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		realLat = append(realLat, call(real))
		noopLat = append(noopLat, call(noop))
	}
	if f.issuer.calls.Load() != 0 {
		b.Fatalf("the warm path called the primary %d times", f.issuer.calls.Load())
	}
	rp50, rp99 := quantiles(realLat)
	np50, np99 := quantiles(noopLat)
	b.ReportMetric(float64(rp50.Microseconds()), "authz-p50-µs")
	b.ReportMetric(float64(rp99.Microseconds()), "authz-p99-µs")
	b.ReportMetric(float64(np50.Microseconds()), "noop-p50-µs")
	b.ReportMetric(float64(np99.Microseconds()), "noop-p99-µs")
	b.ReportMetric(float64(rp99)/float64(np99), "p99-ratio")
}

// BenchmarkCheckThroughput is warm-cookie Checks from parallel clients,
// authz vs the no-op server; compare the two ns/op (per-call wall time at
// GOMAXPROCS-fold concurrency).
func BenchmarkCheckThroughput(b *testing.B) {
	f := newFixture(b, nil)
	tok := f.sign(b, subReq, nil)
	req := warmCheckRequest(tok)
	servers := []struct {
		name     string
		register func(*grpc.Server)
	}{
		{"noop", func(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, noopAuthorization{}) }},
		{"authz", func(g *grpc.Server) {
			authv3.RegisterAuthorizationServer(g, &grpcServer{svc: f.svc, metrics: newMetrics(nil)})
		}},
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			c := startCheckServer(b, s.register)
			b.SetParallelism(8)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Check(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func quantiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
}

// BenchmarkCheckInProcess is one warm-cookie Check without the network:
// reading Envoy's CheckRequest, deciding, building the CheckResponse and
// encoding it as gRPC would. Its allocations are authz's own share of a
// Check (BenchmarkCheckThroughput adds gRPC's, both sides').
func BenchmarkCheckInProcess(b *testing.B) {
	f := newFixture(b, nil)
	tok := f.sign(b, subReq, nil)
	g := &grpcServer{svc: f.svc, metrics: newMetrics(nil)}
	wire, err := proto.Marshal(warmCheckRequest(tok))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	check := func() *authv3.CheckResponse {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			b.Fatal(err)
		}
		resp, err := g.Check(ctx, &req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(resp); err != nil {
			b.Fatal(err)
		}
		return resp
	}
	if resp := check(); resp.GetOkResponse() == nil { // warms the verified-token cache
		b.Fatalf("not allowed: %v", resp)
	}
	b.ReportAllocs()
	for b.Loop() {
		check()
	}
}
