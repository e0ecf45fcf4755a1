package primary

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

type registrarHarness struct {
	f     *fakeCoderd
	r     *Registrar
	timer *fakeTimer
	clk   *fakeClock

	mu         sync.Mutex
	registered []RegisterResponse
}

func newRegistrarHarness(t *testing.T, mut func(*RegistrarOptions)) *registrarHarness {
	t.Helper()
	f, srv := newFakeCoderd(t)
	h := &registrarHarness{f: f, timer: newFakeTimer(), clk: newFakeClock(t0)}
	opts := RegistrarOptions{
		Request:      RegisterRequest{AccessURL: "https://proxy.example.com", DerpEnabled: true, Hostname: "host-a"},
		Interval:     5 * time.Second,
		MaxBackoff:   30 * time.Second,
		Now:          h.clk.Now,
		After:        h.timer.After,
		ReplicaError: func() string { return "Failed to dial peers: 10.0.0.6: timeout" },
		OnRegistered: func(res RegisterResponse) {
			h.mu.Lock()
			h.registered = append(h.registered, res)
			h.mu.Unlock()
		},
	}
	if mut != nil {
		mut(&opts)
	}
	h.r = NewRegistrar(f.client(t, srv), opts)
	return h
}

func (h *registrarHarness) callbacks() []RegisterResponse {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]RegisterResponse(nil), h.registered...)
}

// run starts Run and returns a stop function that cancels it and checks
// it returned nil.
func (h *registrarHarness) run(t *testing.T) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not stop")
		}
	}
}

func (h *registrarHarness) setFail(fail bool) {
	h.f.mu.Lock()
	h.f.failRegister = fail
	h.f.mu.Unlock()
}

func (h *registrarHarness) registerBodies(t *testing.T) []RegisterRequest {
	t.Helper()
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	var out []RegisterRequest
	for _, r := range h.f.requests {
		if r.Path == pathRegister {
			var req RegisterRequest
			if err := json.Unmarshal(r.Body, &req); err != nil {
				t.Fatal(err)
			}
			out = append(out, req)
		}
	}
	return out
}

func TestRegistrarCadenceAndSiblings(t *testing.T) {
	h := newRegistrarHarness(t, nil)
	sib := Replica{ID: uuid.New(), RelayAddress: "https://10.0.0.6:443", RegionID: 10001}
	h.f.regResponse = func(RegisterRequest) RegisterResponse {
		return RegisterResponse{DERPMeshKey: "mk", DERPRegionID: 10001, SiblingReplicas: []Replica{sib}}
	}
	if got := h.r.Health(); got.Registered || !got.Unhealthy {
		t.Errorf("before Start: %+v", got)
	}
	res, err := h.r.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.DERPMeshKey != "mk" || len(h.callbacks()) != 1 || h.callbacks()[0].SiblingReplicas[0].RelayAddress != "https://10.0.0.6:443" {
		t.Errorf("start: %+v, callbacks %v", res, h.callbacks())
	}
	stop := h.run(t)
	for i := range 3 {
		if d := h.timer.next(t); d != 5*time.Second {
			t.Errorf("wait %d = %v, want 5s", i, d)
		}
		h.clk.Advance(5 * time.Second)
		h.timer.tick()
	}
	h.timer.next(t)
	stop()
	bodies := h.registerBodies(t)
	if len(bodies) != 4 || len(h.callbacks()) != 4 {
		t.Fatalf("%d registrations, %d callbacks; want 4", len(bodies), len(h.callbacks()))
	}
	id := bodies[0].ReplicaID
	if id == uuid.Nil || id != h.r.ReplicaID() {
		t.Errorf("replica ID %v", id)
	}
	for i, b := range bodies {
		if b.ReplicaID != id || b.AccessURL != "https://proxy.example.com" || !b.DerpEnabled {
			t.Errorf("registration %d: %+v", i, b)
		}
		wantErr := "Failed to dial peers: 10.0.0.6: timeout"
		if i == 0 {
			wantErr = ""
		}
		if b.ReplicaError != wantErr {
			t.Errorf("registration %d replica_error %q, want %q", i, b.ReplicaError, wantErr)
		}
	}
	hl := h.r.Health()
	if !hl.Registered || hl.Unhealthy || hl.Siblings != 1 || hl.DERPRegionID != 10001 || !hl.LastSuccess.Equal(t0.Add(15*time.Second)) {
		t.Errorf("health %+v", hl)
	}
	// Each process start gets its own replica ID.
	other := NewRegistrar(h.r.c, RegistrarOptions{})
	if other.ReplicaID() == id || other.ReplicaID() == uuid.Nil {
		t.Errorf("second registrar replica ID %v", other.ReplicaID())
	}
}

func TestRegistrarFailuresUnhealthyBackoffRecovery(t *testing.T) {
	h := newRegistrarHarness(t, nil)
	if _, err := h.r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop := h.run(t)
	defer stop()
	h.setFail(true)
	// Ten failures at the normal cadence: still healthy (Coder's proxy
	// gives up only after more than ten).
	for i := 1; i <= 10; i++ {
		if d := h.timer.next(t); d != 5*time.Second {
			t.Fatalf("wait before attempt %d = %v, want 5s", i, d)
		}
		h.timer.tick()
	}
	h.timer.next(t)
	hl := h.r.Health()
	if hl.ConsecutiveFailures != 10 || hl.Unhealthy || !hl.Registered || !IsStatus(hl.LastError, 500) {
		t.Fatalf("after 10 failures: %+v", hl)
	}
	// The 11th failure: unhealthy, and the retry delay backs off.
	h.timer.tick()
	wantWaits := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, want := range wantWaits {
		d := h.timer.next(t)
		if d != want {
			t.Errorf("backoff %d = %v, want %v", i, d, want)
		}
		if i == 0 {
			if hl := h.r.Health(); !hl.Unhealthy || hl.ConsecutiveFailures != 11 || hl.NextAttemptIn != want {
				t.Errorf("after 11 failures: %+v", hl)
			}
		}
		if i < len(wantWaits)-1 {
			h.timer.tick()
		}
	}
	// Recovery.
	h.setFail(false)
	h.clk.Advance(time.Minute)
	h.timer.tick()
	if d := h.timer.next(t); d != 5*time.Second {
		t.Errorf("wait after recovery %v", d)
	}
	hl = h.r.Health()
	if hl.Unhealthy || hl.ConsecutiveFailures != 0 || hl.LastError != nil || !hl.LastSuccess.Equal(t0.Add(time.Minute)) {
		t.Errorf("after recovery: %+v", hl)
	}
}

func TestRegistrarConflict(t *testing.T) {
	tests := []struct {
		name   string
		change func(*RegisterResponse)
	}{
		{"mesh key", func(r *RegisterResponse) { r.DERPMeshKey = "mesh-key-2" }},
		{"region id", func(r *RegisterResponse) { r.DERPRegionID = 10002 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newRegistrarHarness(t, nil)
			var mu sync.Mutex
			changed := false
			h.f.regResponse = func(RegisterRequest) RegisterResponse {
				res := RegisterResponse{DERPMeshKey: "mesh-key-1", DERPRegionID: 10001}
				mu.Lock()
				defer mu.Unlock()
				if changed {
					tt.change(&res)
				}
				return res
			}
			if _, err := h.r.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			stop := h.run(t)
			defer stop()
			h.timer.next(t)
			mu.Lock()
			changed = true
			mu.Unlock()
			h.timer.tick()
			h.timer.next(t) // the loop goes on: a library never exits the process
			hl := h.r.Health()
			if !errors.Is(hl.Conflict, ErrRegistrationChanged) || !hl.Unhealthy || !hl.Registered {
				t.Errorf("health %+v", hl)
			}
			// The conflict sticks even if the primary changes back.
			mu.Lock()
			changed = false
			mu.Unlock()
			h.timer.tick()
			h.timer.next(t)
			if hl := h.r.Health(); hl.Conflict == nil || !hl.Unhealthy {
				t.Errorf("conflict cleared: %+v", hl)
			}
		})
	}
}

func TestRegistrarDeregisterOnShutdown(t *testing.T) {
	h := newRegistrarHarness(t, nil)
	if _, err := h.r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop := h.run(t)
	h.timer.next(t)
	stop()
	if err := h.r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.f.mu.Lock()
	stopped := h.f.stopped[h.r.ReplicaID()]
	h.f.mu.Unlock()
	if !stopped {
		t.Error("primary did not see the deregistration")
	}
	if hl := h.r.Health(); !hl.Deregistered || hl.Registered || !hl.Unhealthy {
		t.Errorf("health %+v", hl)
	}
	// Run after deregistration returns at once, registering nothing.
	n := len(h.registerBodies(t))
	if err := h.r.Run(context.Background()); err != nil {
		t.Errorf("Run after deregister: %v", err)
	}
	if len(h.registerBodies(t)) != n {
		t.Error("registered after deregistration")
	}
}

func TestRegistrarStartFailure(t *testing.T) {
	h := newRegistrarHarness(t, nil)
	h.setFail(true)
	_, err := h.r.Start(context.Background())
	if !IsStatus(err, http.StatusInternalServerError) {
		t.Errorf("Start: %v", err)
	}
	// The package names itself once; the request says what failed.
	if msg := err.Error(); !strings.HasPrefix(msg, "primary: POST ") || strings.Count(msg, "primary") != 1 {
		t.Errorf("Start error %q: want one \"primary: POST …\" prefix", msg)
	}
	if hl := h.r.Health(); hl.Registered || !hl.Unhealthy || hl.ConsecutiveFailures != 1 {
		t.Errorf("health %+v", hl)
	}
	if err := h.r.Run(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Run before Start: %v", err)
	}
	if len(h.callbacks()) != 0 {
		t.Error("callback on failure")
	}
}

func TestRegistrarAttemptTimeout(t *testing.T) {
	srv := rawServer(t, func(_ http.ResponseWriter, r *http.Request) { hang(r) })
	c := rawClient(t, srv.URL, Options{})
	r := NewRegistrar(c, RegistrarOptions{AttemptTimeout: 200 * time.Millisecond})
	start := time.Now()
	_, err := r.Start(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("err %v after %v", err, time.Since(start))
	}
}

func TestRegistrarShutdownMidAttemptIsNotAFailure(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	entered := make(chan struct{}, 1)
	srv := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n > 1 {
			entered <- struct{}{}
			hang(r)
			return
		}
		writeJSON(w, 201, RegisterResponse{DERPMeshKey: "k"})
	})
	timer := newFakeTimer()
	r := NewRegistrar(rawClient(t, srv.URL, Options{}), RegistrarOptions{After: timer.After})
	if _, err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	timer.next(t)
	timer.tick()
	<-entered
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if hl := r.Health(); hl.ConsecutiveFailures != 0 || hl.LastError != nil || hl.Unhealthy {
		t.Errorf("health after shutdown mid-attempt: %+v", hl)
	}
}

// outageTransport fails every request while down, as an unreachable
// primary does (or, with gateway set, as a load balancer in front of a
// dead primary does: 503), and counts the requests tried by path.
type outageTransport struct {
	mu      sync.Mutex
	down    bool
	gateway bool
	tried   map[string]int
}

func (o *outageTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	o.mu.Lock()
	down := o.down
	o.tried[r.URL.Path]++
	o.mu.Unlock()
	switch {
	case down && o.gateway:
		return &http.Response{
			StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:  http.Header{"Content-Type": {"text/html"}},
			Body:    io.NopCloser(strings.NewReader("<html>no healthy upstream</html>")),
			Request: r,
		}, nil
	case down:
		return nil, errors.New("dial tcp: connection refused")
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (o *outageTransport) set(down bool) {
	o.mu.Lock()
	o.down = down
	o.mu.Unlock()
}

func (o *outageTransport) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tried[path]
}

// TestRegistrarComesBackPromptlyAfterLongOutage: after a primary outage
// long enough for the backoff to reach its cap, the proxy re-registers
// within one probe interval of the primary answering again (not up to a
// minute later), probes only with the cheap build info call in between,
// and Health says since when registration has been failing.
func TestRegistrarComesBackPromptlyAfterLongOutage(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) { testComesBackAfterOutage(t, false) })
	t.Run("gateway answers 503", func(t *testing.T) { testComesBackAfterOutage(t, true) })
}

func testComesBackAfterOutage(t *testing.T, gateway bool) {
	f, srv := newFakeCoderd(t)
	tr := &outageTransport{tried: map[string]int{}, gateway: gateway}
	timer, clk := newFakeTimer(), newFakeClock(t0)
	r := NewRegistrar(f.client(t, srv, func(o *Options) { o.HTTPClient = &http.Client{Transport: tr} }), RegistrarOptions{
		Request: RegisterRequest{AccessURL: "https://proxy.example.com"},
		Now:     clk.Now,
		After:   timer.After,
	})
	if _, err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// step lets the loop's pending wait pass on the fake clock and returns
	// once the loop has done what followed and waits again.
	pending := timer.next(t)
	step := func() time.Duration {
		d := pending
		clk.Advance(d)
		timer.tick()
		pending = timer.next(t)
		return d
	}

	tr.set(true)
	failingSince := clk.Now().Add(5 * time.Second) // the first attempt after the outage began
	for range 11 {
		step()
	}
	registersBefore := tr.count(pathRegister)
	// Three minutes of outage past the eleventh failure: the backoff
	// reaches its one-minute cap, but the loop wakes every 5 s to probe.
	for outage := time.Duration(0); outage < 3*time.Minute; {
		d := step()
		if d > 5*time.Second {
			t.Fatalf("waited %v in one go while the primary was unreachable; want probes every 5s", d)
		}
		outage += d
	}
	if n := tr.count(pathRegister) - registersBefore; n > 4 {
		t.Errorf("%d registrations in 3 min of backoff; probing must not replace the backoff", n)
	}
	if tr.count(pathBuildInfo) < 30 {
		t.Errorf("%d build info probes in 3 min, want one every 5s", tr.count(pathBuildInfo))
	}
	hl := r.Health()
	if !hl.Unhealthy || !hl.FailingSince.Equal(failingSince) || hl.FailingFor != clk.Now().Sub(failingSince) {
		t.Fatalf("health during the outage: %+v (want failing since %v)", hl, failingSince)
	}

	tr.set(false)
	back := clk.Now()
	for i := 0; r.Health().ConsecutiveFailures != 0; i++ {
		if i == 20 {
			t.Fatal("never re-registered after the primary came back")
		}
		step()
	}
	if took := clk.Now().Sub(back); took > 5*time.Second {
		t.Errorf("re-registered %v after the primary answered again, want within 5s", took)
	}
	hl = r.Health()
	if hl.Unhealthy || !hl.FailingSince.IsZero() || hl.FailingFor != 0 || !hl.LastSuccess.Equal(back.Add(5*time.Second)) {
		t.Errorf("health after recovery: %+v", hl)
	}
	if pending != 5*time.Second {
		t.Errorf("wait after recovery %v, want 5s", pending)
	}
}
