package primary

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of RegistrarOptions (docs/protocol.md#registration-loop).
const (
	// DefaultRegisterInterval must match the primary's replica-sync
	// interval or DERP meshing between replicas breaks.
	DefaultRegisterInterval = 5 * time.Second
	DefaultAttemptTimeout   = 10 * time.Second
	DefaultMaxBackoff       = time.Minute
	// DefaultMaxFailures is where Coder's own proxy gives up and exits;
	// wsedge reports itself unhealthy there and keeps retrying.
	DefaultMaxFailures = 10
)

// Registration errors.
var (
	ErrNotStarted = errors.New("registrar: Start has not succeeded")
	// ErrRegistrationChanged: a re-registration answered a different DERP
	// mesh key or region ID than the first one. Coder's proxy exits; the
	// process must be restarted to pick the new values up.
	ErrRegistrationChanged = errors.New("registration changed; restart the proxy")
)

// RegistrarOptions configure a Registrar.
type RegistrarOptions struct {
	// Request is sent on every registration; a nil ReplicaID is replaced
	// by a random one (one per process start: a deregistered replica ID
	// can never register again).
	Request RegisterRequest
	// Interval between re-registrations (default 5 s).
	Interval time.Duration
	// AttemptTimeout bounds each attempt (default 10 s).
	AttemptTimeout time.Duration
	// MaxFailures consecutive failed attempts make the registration
	// unhealthy (default 10; Coder's proxy exits after more than 10).
	MaxFailures int
	// MaxBackoff caps the retry delay, which doubles from Interval for
	// each failure beyond MaxFailures (default 1 min).
	MaxBackoff time.Duration
	// ProbeInterval: while backing off because the primary did not answer
	// (no answer, or 502/503/504 from a gateway in front of it), its build
	// info (unauthenticated, no database write) is fetched this often, and
	// registration is retried as soon as it answers, so a long outage does
	// not leave the proxy unregistered for up to MaxBackoff after the
	// primary is back (default Interval).
	ProbeInterval time.Duration
	// OnRegistered is called after every successful registration, the
	// first included, from the registering goroutine (keep it short):
	// sibling replicas for the DERP mesh, DERP settings.
	OnRegistered func(RegisterResponse)
	// ReplicaError, when set, is called before each re-registration to
	// fill replica_error (the result of pinging siblings).
	ReplicaError func() string
	Now          func() time.Time
	// After is the loop's timer; nil: time.After.
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// Registerer, if set, receives the registration's health gauges.
	Registerer prometheus.Registerer
}

// RegistrationHealth is a snapshot of the registration's state.
type RegistrationHealth struct {
	ReplicaID uuid.UUID
	// Registered: the last attempt succeeded (or, after failures, an
	// earlier one did and the replica has not been deregistered).
	Registered   bool
	Deregistered bool
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures int
	// FailingSince is the first of the consecutive failed attempts (zero
	// when the last attempt succeeded); FailingFor is how long ago that
	// was when Health was called.
	FailingSince time.Time
	FailingFor   time.Duration
	LastError    error
	LastAttempt  time.Time
	LastSuccess  time.Time
	// Conflict is set (and sticks) when the primary changed the DERP mesh
	// key or region ID; it wraps ErrRegistrationChanged.
	Conflict error
	// Unhealthy: never registered, deregistered, more than MaxFailures
	// consecutive failures, or a Conflict.
	Unhealthy    bool
	DERPRegionID int32
	Siblings     int
	// NextAttemptIn is the delay Run waits before the next attempt.
	NextAttemptIn time.Duration
}

// Registrar keeps this proxy replica registered with the primary.
type Registrar struct {
	c    *Client
	opts RegistrarOptions
	log  *slog.Logger

	mu     sync.Mutex
	req    RegisterRequest
	first  *RegisterResponse
	health RegistrationHealth
}

// NewRegistrar builds a registrar; nothing is sent before Start.
func NewRegistrar(c *Client, opts RegistrarOptions) *Registrar {
	if opts.Interval <= 0 {
		opts.Interval = DefaultRegisterInterval
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = DefaultMaxFailures
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.Interval {
		opts.MaxBackoff = opts.Interval
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = opts.Interval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	req := opts.Request
	if req.ReplicaID == uuid.Nil {
		req.ReplicaID = uuid.New()
	}
	r := &Registrar{c: c, opts: opts, log: log.With(slog.String("replica_id", req.ReplicaID.String())), req: req}
	r.health.ReplicaID = req.ReplicaID
	if opts.Registerer != nil {
		r.registerMetrics(opts.Registerer)
	}
	return r
}

// ReplicaID is the replica ID this registrar registers.
func (r *Registrar) ReplicaID() uuid.UUID { return r.req.ReplicaID }

// Start performs the first registration synchronously; the proxy should
// not start serving if it fails.
func (r *Registrar) Start(ctx context.Context) (RegisterResponse, error) {
	res, err := r.attempt(ctx, true)
	if err != nil {
		return RegisterResponse{}, err // "primary: POST …/register: …"
	}
	return res, nil
}

// Run re-registers every Interval until ctx is done (then returns nil)
// or the replica is deregistered. Failures are retried (every Interval
// up to MaxFailures, then with doubling delays capped at MaxBackoff) and
// reported through Health, never by exiting. While backing off from a
// primary that did not answer, Run probes it every ProbeInterval and
// re-registers as soon as it answers.
func (r *Registrar) Run(ctx context.Context) error {
	r.mu.Lock()
	started := r.first != nil
	r.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	for {
		r.mu.Lock()
		wait := r.delayLocked()
		r.health.NextAttemptIn = wait
		done := r.health.Deregistered
		r.mu.Unlock()
		if done {
			return nil
		}
		if !r.waitOrProbe(ctx, wait) {
			return nil
		}
		r.mu.Lock()
		done = r.health.Deregistered
		r.mu.Unlock()
		if done {
			return nil
		}
		_, _ = r.attempt(ctx, false)
	}
}

// waitOrProbe waits for the next attempt: wait, or less when the
// primary, unreachable at the last attempt, answers a probe in the
// meantime. It returns false when ctx ended.
func (r *Registrar) waitOrProbe(ctx context.Context, wait time.Duration) bool {
	r.mu.Lock()
	probe := wait > r.opts.ProbeInterval && primaryDown(r.health.LastError)
	r.mu.Unlock()
	for {
		step := wait
		if probe {
			step = min(wait, r.opts.ProbeInterval)
		}
		select {
		case <-ctx.Done():
			return false
		case <-r.opts.After(step):
		}
		if ctx.Err() != nil {
			return false
		}
		wait -= step
		if wait <= 0 || r.primaryAnswers(ctx) {
			return true
		}
		r.mu.Lock()
		r.health.NextAttemptIn = wait
		r.mu.Unlock()
	}
}

// primaryDown: err says the primary itself did not answer (no answer at
// all, or a gateway in front of it answering for it). Other failures (a
// refused token, a failing database) are answered by the primary, and a
// probe would succeed without the registration doing so: those keep the
// plain backoff.
func primaryDown(err error) bool {
	return errors.Is(err, ErrUnavailable) || IsStatus(err, http.StatusBadGateway) ||
		IsStatus(err, http.StatusServiceUnavailable) || IsStatus(err, http.StatusGatewayTimeout)
}

// primaryAnswers probes the primary with its build info endpoint.
func (r *Registrar) primaryAnswers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, r.opts.AttemptTimeout)
	defer cancel()
	if _, err := r.c.BuildInfo(ctx); err != nil {
		return false
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "the primary answers again; re-registering now")
	return true
}

// delayLocked is the wait before the next attempt.
func (r *Registrar) delayLocked() time.Duration {
	over := r.health.ConsecutiveFailures - r.opts.MaxFailures
	if over <= 0 {
		return r.opts.Interval
	}
	d := r.opts.Interval
	for i := 0; i < over && d < r.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, r.opts.MaxBackoff)
}

func (r *Registrar) attempt(ctx context.Context, first bool) (RegisterResponse, error) {
	r.mu.Lock()
	if !first && r.opts.ReplicaError != nil {
		r.req.ReplicaError = r.opts.ReplicaError()
	}
	req := r.req
	r.mu.Unlock()

	actx, cancel := context.WithTimeout(ctx, r.opts.AttemptTimeout)
	res, err := r.c.Register(actx, req)
	cancel()
	now := r.opts.Now()

	if err != nil && !first && ctx.Err() != nil {
		// Shutting down: not a failure of the primary.
		return RegisterResponse{}, err
	}
	r.mu.Lock()
	h := &r.health
	h.LastAttempt = now
	if err != nil {
		if h.ConsecutiveFailures == 0 {
			h.FailingSince = now
		}
		h.ConsecutiveFailures++
		h.LastError = err
		h.Unhealthy = r.unhealthyLocked()
		n := h.ConsecutiveFailures
		r.mu.Unlock()
		level := slog.LevelWarn
		msg := "re-registration with the primary failed"
		if n == r.opts.MaxFailures+1 {
			level, msg = slog.LevelError, "re-registration failed too often; reporting unhealthy and retrying with backoff"
		}
		if first {
			msg = "registration with the primary failed"
		}
		r.log.LogAttrs(ctx, level, msg, slog.Int("consecutive_failures", n), slog.Any("error", err))
		return RegisterResponse{}, err
	}
	if r.first == nil {
		cp := res
		r.first = &cp
	} else if h.Conflict == nil {
		switch {
		case res.DERPMeshKey != r.first.DERPMeshKey:
			h.Conflict = fmt.Errorf("%w: DERP mesh key changed", ErrRegistrationChanged)
		case res.DERPRegionID != r.first.DERPRegionID:
			h.Conflict = fmt.Errorf("%w: DERP region ID changed from %d to %d", ErrRegistrationChanged, r.first.DERPRegionID, res.DERPRegionID)
		case res.AppSecurityKey != r.first.AppSecurityKey:
			h.Conflict = fmt.Errorf("%w: legacy app security key changed", ErrRegistrationChanged)
		}
		if h.Conflict != nil {
			r.log.LogAttrs(ctx, slog.LevelError, "primary changed this proxy's registration; restart the proxy", slog.Any("error", h.Conflict))
		}
	}
	recovered := h.ConsecutiveFailures > 0
	h.ConsecutiveFailures = 0
	h.FailingSince = time.Time{}
	h.LastError = nil
	h.LastSuccess = now
	h.Registered = true
	h.DERPRegionID = res.DERPRegionID
	h.Siblings = len(res.SiblingReplicas)
	h.Unhealthy = r.unhealthyLocked()
	r.mu.Unlock()
	if recovered {
		r.log.LogAttrs(ctx, slog.LevelInfo, "registration with the primary recovered")
	}
	if r.opts.OnRegistered != nil {
		r.opts.OnRegistered(res)
	}
	return res, nil
}

func (r *Registrar) unhealthyLocked() bool {
	h := &r.health
	return !h.Registered || h.Deregistered || h.Conflict != nil || h.ConsecutiveFailures > r.opts.MaxFailures
}

// Health reports the registration's state.
func (r *Registrar) Health() RegistrationHealth {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.health
	h.Unhealthy = r.unhealthyLocked()
	if !h.FailingSince.IsZero() {
		h.FailingFor = r.opts.Now().Sub(h.FailingSince)
	}
	return h
}

// Deregister marks this replica stopped on the primary (call on
// shutdown, after Run has returned). Run stops re-registering from then
// on; the replica ID cannot register again.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	r.health.Deregistered = true
	r.health.Registered = false
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.opts.AttemptTimeout)
	defer cancel()
	if err := r.c.Deregister(ctx, r.req.ReplicaID); err != nil {
		return err // "primary: POST …/deregister: …"
	}
	r.log.Info("deregistered from the primary")
	return nil
}
