package primary

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// A call made within a traced request carries traceparent with the
// request's trace id and a span of its own; a background call carries
// none and records no span.
func TestTraceparentOnTracedCallsOnly(t *testing.T) {
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"version":"v2.99.1","dashboard_url":"http://x"}`))
	}))
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	u, _ := url.Parse(srv.URL)
	c, err := New(Options{URL: u, ProxyToken: "x:y", TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.BuildInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tpHeader := <-got; tpHeader != "" {
		t.Fatalf("untraced call sent traceparent %q", tpHeader)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("untraced call recorded %d spans", n)
	}

	ctx, parent := tp.Tracer("test").Start(context.Background(), "check")
	if _, err := c.BuildInfo(ctx); err != nil {
		t.Fatal(err)
	}
	parent.End()
	header := <-got
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans, want the call's and the parent", len(spans))
	}
	call := spans[0]
	if call.Name() != "primary buildinfo" || call.SpanKind() != trace.SpanKindClient || call.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("call span %q kind %v parent %v", call.Name(), call.SpanKind(), call.Parent().SpanID())
	}
	want := "00-" + parent.SpanContext().TraceID().String() + "-" + call.SpanContext().SpanID().String() + "-01"
	if header != want {
		t.Fatalf("traceparent = %q, want %q", header, want)
	}
}
