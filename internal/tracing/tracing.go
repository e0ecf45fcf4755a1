// Package tracing sets up OpenTelemetry tracing for authz and the dialer.
// Tracing is off unless the standard OTEL_* environment asks for an OTLP
// exporter; then spans go over OTLP/gRPC to the configured collector and
// trace context travels as W3C traceparent, the format Envoy's
// OpenTelemetry tracer reads and writes. Off means no tracer provider at
// all: the services then install no instrumentation, so the hot path pays
// nothing.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Propagator carries trace context between processes: W3C traceparent and
// tracestate only, as Envoy's OpenTelemetry tracer does.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// ErrUnsupported is wrapped when the environment asks for an exporter or
// protocol wsedge does not ship.
var ErrUnsupported = errors.New("tracing: unsupported setting")

// Environment variables read here; the exporter and the SDK read the rest
// (endpoint, headers, TLS, timeouts, sampler, batching, resource).
const (
	envSDKDisabled         = "OTEL_SDK_DISABLED"
	envTracesExporter      = "OTEL_TRACES_EXPORTER"
	envEndpoint            = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint      = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol            = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol      = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	supportedProtocol      = "grpc"
	supportedExporter      = "otlp"
	disabledExporterMarker = "none"
)

// Enabled reports whether the environment (getenv, e.g. os.Getenv) turns
// tracing on: OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint variable with
// OTEL_TRACES_EXPORTER unset. OTEL_SDK_DISABLED=true and
// OTEL_TRACES_EXPORTER=none turn it off. Other exporters and the http/*
// protocols are refused with ErrUnsupported rather than silently ignored.
func Enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv(envSDKDisabled)), "true") {
		return false, nil
	}
	on := getenv(envEndpoint) != "" || getenv(envTracesEndpoint) != ""
	switch exp := strings.ToLower(strings.TrimSpace(getenv(envTracesExporter))); exp {
	case "":
	case disabledExporterMarker:
		return false, nil
	case supportedExporter:
		on = true
	default:
		return false, fmt.Errorf("%w: %s=%q (wsedge exports traces with otlp only)", ErrUnsupported, envTracesExporter, exp)
	}
	if !on {
		return false, nil
	}
	for _, v := range []string{envTracesProtocol, envProtocol} {
		p := strings.TrimSpace(getenv(v))
		if p == "" {
			continue
		}
		if p != supportedProtocol {
			return false, fmt.Errorf("%w: %s=%q (wsedge exports OTLP over grpc only)", ErrUnsupported, v, p)
		}
		break
	}
	return true, nil
}

// Options tune New.
type Options struct {
	// Service is the default service.name (OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES win over it).
	Service string
	// Version is reported as service.version.
	Version string
	// Exporter adds exporter options after the environment's (wsedge dev
	// and tests: a fixed loopback endpoint).
	Exporter []otlptracegrpc.Option
	// BatchTimeout, if set, overrides how long spans wait before export
	// (OTEL_BSP_SCHEDULE_DELAY, default 5 s).
	BatchTimeout time.Duration
}

// FromEnv returns the tracer provider the environment asks for, or nil
// when tracing is off. The caller owns it: Shutdown flushes the last
// spans.
func FromEnv(ctx context.Context, opts Options) (*sdktrace.TracerProvider, error) {
	on, err := Enabled(os.Getenv)
	if err != nil || !on {
		return nil, err
	}
	return New(ctx, opts)
}

// New builds a tracer provider that batches spans to an OTLP/gRPC
// collector. The exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers,
// certificates, timeout, compression); the SDK reads OTEL_TRACES_SAMPLER
// (default parentbased_always_on: a sampled traceparent from Envoy is
// always continued) and OTEL_BSP_*. The exporter connects lazily: a
// collector that is down costs dropped spans, never a failed start.
func New(ctx context.Context, opts Options) (*sdktrace.TracerProvider, error) {
	exp, err := otlptracegrpc.New(ctx, opts.Exporter...)
	if err != nil {
		return nil, fmt.Errorf("tracing: otlp exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", opts.Service)}
	if opts.Version != "" {
		attrs = append(attrs, attribute.String("service.version", opts.Version))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	var batch []sdktrace.BatchSpanProcessorOption
	if opts.BatchTimeout > 0 {
		batch = append(batch, sdktrace.WithBatchTimeout(opts.BatchTimeout))
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, batch...),
		sdktrace.WithResource(res),
	), nil
}
