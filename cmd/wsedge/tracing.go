package main

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsedge/wsedge/internal/buildinfo"
	"github.com/wsedge/wsedge/internal/tracing"
)

// openTracing builds the tracer provider the OTEL_* environment asks for;
// tp is nil when tracing is off. stop flushes the last spans (bounded, so
// an unreachable collector cannot hold up shutdown).
func openTracing(ctx context.Context, service string) (tp trace.TracerProvider, stop func(log *slog.Logger), err error) {
	p, err := tracing.FromEnv(ctx, tracing.Options{Service: service, Version: buildinfo.Version()})
	if err != nil || p == nil {
		return nil, func(*slog.Logger) {}, err
	}
	return p, func(log *slog.Logger) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(sctx); err != nil {
			log.Warn("tracing: flush the last spans", "error", err)
		}
	}, nil
}

// reportTracingErrors sends the SDK's own errors (an unreachable
// collector, dropped spans) to the service log instead of the standard
// logger.
func reportTracingErrors(log *slog.Logger, service string, tp trace.TracerProvider) {
	if tp == nil {
		return
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "error", err) }))
	log.Info("tracing on: spans go over OTLP/gRPC to the collector the OTEL_* environment names", "service", service)
}
