package authz

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// tracerName names the spans of the pipeline steps.
const tracerName = "github.com/wsedge/wsedge/authz"

// Span names of the pipeline steps that do work; each is a child of the
// gRPC server span of the Check that Envoy's ext_authz call started.
const (
	spanDecryptSmuggledKey = "authz.decrypt_smuggled_key"
	spanVerifyToken        = "authz.verify_token"
	spanIssueToken         = "authz.issue_token"
)

// noSpan is what a step gets when tracing is off: a non-recording span
// from the empty context, so the step costs neither a context nor an
// allocation.
var noSpan = trace.SpanFromContext(context.Background())

// startSpan starts a step span, or returns ctx unchanged when tracing is
// off.
func (s *Service) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, noSpan
	}
	return s.tracer.Start(ctx, name)
}

// endSpan ends a step span with the step's outcome.
func endSpan(span trace.Span, outcome string, err error) {
	if !span.IsRecording() {
		span.End()
		return
	}
	if outcome != "" {
		span.SetAttributes(attrOutcome.String(outcome))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
}

// attrOutcome is the step's result, from the same bounded set as the
// check metrics' outcome label.
const attrOutcome = attribute.Key("wsedge.outcome")

// statsHandler is the gRPC server instrumentation: a server span per
// Check (and per ext_proc stream) continuing the trace context Envoy
// sends in the call's metadata. Health checks are not traced; metrics
// stay with Prometheus.
func statsHandler(tp trace.TracerProvider) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(filters.Not(filters.ServiceName(healthpb.Health_ServiceDesc.ServiceName))),
	))
}
