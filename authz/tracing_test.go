package authz

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/wsedge/wsedge/internal/tracing"
	"github.com/wsedge/wsedge/tokens"
)

// A Check that arrives with Envoy's traceparent in its metadata gets a
// server span continuing that trace, and the steps that did work (token
// lookup, issue call) are its children. Health checks are not traced.
func TestCheckContinuesEnvoysTrace(t *testing.T) {
	f := newFixture(t, nil)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	f.svc.tp, f.svc.tracer = tp, tp.Tracer(tracerName)
	// As the composition root serves it: authz's Check on a gRPC server
	// with the tracing stats handler.
	g := grpc.NewServer(tracing.GRPCServer(tp))
	authv3.RegisterAuthorizationServer(g, NewAuthorizationServer(f.svc, nil))
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })

	const envoyTrace, envoySpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+envoyTrace+"-"+envoySpan+"-01")
	resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7"},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: accessHost, Path: "/@alice/dev.main/apps/code/", Scheme: "https",
			Headers: map[string]string{"cookie": tokens.PathAppSessionCookie + "=sess-path", "accept": "text/html"},
		}},
	}})
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check = %v, %v; want an allow", resp, err)
	}

	// gRPC ends the server span after it has sent the answer, so the
	// client may read it first: wait for the span a little.
	serverSpan := authv3.Authorization_ServiceDesc.ServiceName + "/Check"
	byName := map[string]sdktrace.ReadOnlySpan{}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		for _, s := range rec.Ended() {
			byName[s.Name()] = s
		}
		if _, ok := byName[serverSpan]; ok || time.Now().After(deadline) {
			break
		}
	}
	server, ok := byName[serverSpan]
	if !ok {
		t.Fatalf("no server span among %v", names(rec.Ended()))
	}
	if server.SpanKind() != trace.SpanKindServer || server.SpanContext().TraceID().String() != envoyTrace || server.Parent().SpanID().String() != envoySpan {
		t.Fatalf("server span kind %v trace %s parent %s; want Envoy's trace and span", server.SpanKind(), server.SpanContext().TraceID(), server.Parent().SpanID())
	}
	for _, step := range []string{spanVerifyToken, spanIssueToken} {
		s, ok := byName[step]
		if !ok {
			t.Fatalf("no %s span among %v", step, names(rec.Ended()))
		}
		if s.Parent().SpanID() != server.SpanContext().SpanID() {
			t.Errorf("%s parent %s, want the server span %s", step, s.Parent().SpanID(), server.SpanContext().SpanID())
		}
	}
	if _, ok := byName[spanDecryptSmuggledKey]; ok {
		t.Error("a decrypt span without a smuggled key")
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// With tracing off the steps record nothing and allocate no span context.
func TestStepsWithoutTracing(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	got, span := f.svc.startSpan(ctx, spanVerifyToken)
	if got != ctx || span.IsRecording() {
		t.Fatal("a span without a tracer provider")
	}
	if n := testing.AllocsPerRun(100, func() { _, s := f.svc.startSpan(ctx, spanVerifyToken); endSpan(s, "valid", nil) }); n != 0 {
		t.Fatalf("%v allocations per untraced step", n)
	}
}
