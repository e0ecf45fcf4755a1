package dialer

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracerName names the dialer's own spans.
const tracerName = "github.com/wsedge/wsedge/dialer"

// Span names. The request span is "dialer <route kind>" (route kinds are
// the bounded set of the request metrics).
const (
	spanRequestPrefix = "dialer "
	spanDialAgent     = "tailnet.dial"
	spanPTYBridge     = "dialer.pty_bridge"
)

var traceContext propagation.TextMapPropagator = propagation.TraceContext{}

// noSpan is what code gets when tracing is off: no context, no allocation.
var noSpan = trace.SpanFromContext(context.Background())

// traced wraps the dialer's (instrumented) handler in a request span that continues the
// trace of Envoy's upstream span (W3C traceparent). The span ends when
// the response headers go out (or the connection is hijacked for a
// websocket or DERP), not when the body or the websocket ends: proxied
// downloads and hour-long websockets must not make hour-long spans. Probe
// requests made without a traceparent (/healthz from a kubelet) are not
// traced.
func traced(next http.Handler, tp trace.TracerProvider) http.Handler {
	return otelhttp.NewHandler(next, "dialer",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(traceContext),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithFilter(func(r *http.Request) bool {
			if r.Header.Get("Traceparent") != "" {
				return true
			}
			return r.URL.Path != "/healthz" && r.URL.Path != "/healthz-report"
		}),
	)
}

// endAtHeaders ends the request span as soon as the response headers are
// decided, naming it after the route kind. It sits inside instrument,
// whose route label (set by the routing below) it reads when the span
// ends.
func endAtHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		span := trace.SpanFromContext(r.Context())
		if !span.IsRecording() {
			next.ServeHTTP(w, r)
			return
		}
		label := new(string)
		if st := stateOf(r.Context()); st != nil {
			label = &st.label
		}
		hw := &headerSpanWriter{ResponseWriter: w, span: span, label: label}
		defer hw.end(http.StatusOK)
		next.ServeHTTP(hw, r)
	})
}

// headerSpanWriter ends its span on the first WriteHeader, Write, Flush
// or Hijack.
type headerSpanWriter struct {
	http.ResponseWriter
	span  trace.Span
	label *string
	once  sync.Once
}

func (w *headerSpanWriter) end(code int) {
	w.once.Do(func() {
		w.span.SetName(spanRequestPrefix + *w.label)
		w.span.SetAttributes(attribute.Int("http.response.status_code", code), attribute.String("wsedge.route", *w.label))
		if code >= 500 {
			w.span.SetStatus(codes.Error, http.StatusText(code))
		}
		w.span.End()
	})
}

func (w *headerSpanWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.end(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerSpanWriter) Write(b []byte) (int, error) {
	w.end(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

func (w *headerSpanWriter) Flush() {
	w.end(http.StatusOK)
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *headerSpanWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.end(http.StatusSwitchingProtocols)
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *headerSpanWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// startSpan starts one of the dialer's own spans, or returns ctx
// unchanged when tracing is off.
func startSpan(tracer trace.Tracer, ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if tracer == nil {
		return ctx, noSpan
	}
	return tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends a span, recording err.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// injectTrace makes the app's request continue the dialer's request span
// rather than Envoy's (no-op when tracing is off: the header Envoy sent
// passes through).
func (s *Server) injectTrace(out *http.Request) {
	if s.tracer == nil {
		return
	}
	traceContext.Inject(out.Context(), propagation.HeaderCarrier(out.Header))
}
