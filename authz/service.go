package authz

import (
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wsedge/wsedge/tokens"
)

// Service runs the Check pipeline. It holds no per-user state: everything
// it knows about a user comes from the request and the primary.
type Service struct {
	cfg      *compiled
	verifier *tokens.Verifier
	issuer   issuer
	log      *slog.Logger
	now      func() time.Time
	// checks bounds concurrent Check calls (Limits.Checks).
	checks slots
	// tp and tracer are nil when tracing is off.
	tp     trace.TracerProvider
	tracer trace.Tracer
}

// Options wires a Service to its collaborators.
type Options struct {
	Config Config
	// Keys verifies app tokens and decrypts smuggled keys (the primary
	// client's key cache).
	Keys   tokens.KeySource
	Issuer Issuer
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Limits bound in-flight work; zero fields take the defaults.
	Limits Limits
	// TracerProvider, if set, traces a span per pipeline step that does
	// work (the gRPC server span is the composition root's). nil: no
	// tracing, and no instrumentation on the hot path.
	TracerProvider trace.TracerProvider
}

// New builds a Service.
func New(opts Options) (*Service, error) {
	cfg, err := compile(opts.Config)
	if err != nil {
		return nil, err
	}
	limits, err := opts.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.Keys == nil {
		return nil, errors.New("authz: a key source is required")
	}
	if opts.Issuer == nil {
		return nil, errNoIssuer
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg:      cfg,
		verifier: &tokens.Verifier{Keys: opts.Keys, Now: now},
		issuer:   issuer{upstream: opts.Issuer, now: now, calls: newSlots(limits.IssueCalls)},
		log:      log,
		now:      now,
		checks:   newSlots(limits.Checks),
	}
	if opts.TracerProvider != nil {
		s.tp = opts.TracerProvider
		s.tracer = opts.TracerProvider.Tracer(tracerName)
	}
	return s, nil
}
