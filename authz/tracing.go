package authz

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
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
