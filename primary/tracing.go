package primary

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceTransport makes a client span for every call made on behalf of a
// traced request (the issue call of a Check, the owner lookup of an
// ext_proc stream) and sends its context to coderd as W3C traceparent,
// which coderd continues. Background calls (registration every 5 s, key
// refreshes, app stats) have no span in their context and are not
// traced: they would be a root trace every few seconds.
func traceTransport(next http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	return otelhttp.NewTransport(next,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithFilter(func(r *http.Request) bool {
			return trace.SpanContextFromContext(r.Context()).IsValid()
		}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return "primary " + endpointLabel(r.URL.Path)
		}),
	)
}
