package dialer

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCollector is a sessionCollector whose cycles and releases are
// counted, not run, on a clock of its own whose timers fire when the test
// says; runtime is the runtime's own cycles.
type fakeCollector struct {
	sessionCollector
	asked, runtime, released atomic.Uint64
	clock                    atomic.Int64
	mu                       sync.Mutex
	timers                   []func()
}

func newFakeCollector() *fakeCollector {
	f := &fakeCollector{}
	f.collect = func() { f.asked.Add(1); f.runtime.Add(1) }
	f.count = f.runtime.Load
	f.release = func() { f.released.Add(1); f.runtime.Add(1) }
	f.now = func() time.Duration { return time.Duration(f.clock.Load()) }
	f.after = func(_ time.Duration, fn func()) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.timers = append(f.timers, fn)
	}
	f.quiet = burstQuiet
	return f
}

// advance moves the clock by d and fires the timers set before.
func (f *fakeCollector) advance(d time.Duration) {
	f.clock.Add(int64(d))
	f.mu.Lock()
	due := f.timers
	f.timers = nil
	f.mu.Unlock()
	for _, fn := range due {
		fn()
	}
}

// pending is how many timers are set.
func (f *fakeCollector) pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// openN opens n sessions, waiting after each for a cycle it asked for
// to be over, and returns their closers.
func (f *fakeCollector) openN(n int) []func() {
	var closers []func()
	for range n {
		closers = append(closers, f.sessionOpened())
		for f.running.Load() {
			time.Sleep(time.Millisecond)
		}
	}
	return closers
}

func TestSessionCollector(t *testing.T) {
	f := newFakeCollector()
	f.openN(sessionGCEvery - 1)
	if got := f.asked.Load(); got != 0 {
		t.Fatalf("%d cycles after %d sessions, want none", got, sessionGCEvery-1)
	}
	f.openN(1)
	if got := f.asked.Load(); got != 1 {
		t.Fatalf("%d cycles after %d sessions, want 1", got, sessionGCEvery)
	}

	// The runtime's own cycle in the window counts as one.
	f.openN(10)
	f.runtime.Add(1)
	f.openN(sessionGCEvery - 10)
	if got := f.asked.Load(); got != 1 {
		t.Fatalf("asked for a cycle though the runtime ran one (%d cycles)", got)
	}
	f.openN(sessionGCEvery)
	if got := f.asked.Load(); got != 2 {
		t.Fatalf("%d cycles after another %d sessions, want 2", got, sessionGCEvery)
	}

	// With many open, a cycle every eighth of them.
	f = newFakeCollector()
	const many = 4096
	closers := f.openN(many)
	// 8 up to 1,024 open, then every eighth: 18 in all (not 32).
	if got := f.asked.Load(); got != 18 {
		t.Fatalf("%d cycles while %d sessions opened, want 18", got, many)
	}
	// The next comes when those since the last are an eighth of the open.
	before, since := f.asked.Load(), f.since.Load()
	var k int64
	for f.asked.Load() == before {
		closers = append(closers, f.openN(1)...)
		k++
	}
	if open := many + k; since+k != open/8 {
		t.Fatalf("cycle %d sessions after the last with %d open, want %d", since+k, open, open/8)
	}
	// Closed sessions leave the count: sessionGCEvery again.
	for _, c := range closers {
		c()
	}
	if got := f.open.Load(); got != 0 {
		t.Fatalf("%d open after closing all, want 0", got)
	}
	f.openN(sessionGCEvery)
	if got := f.asked.Load(); got != before+2 {
		t.Fatalf("%d cycles, want %d: with none open, one every %d again", got, before+2, sessionGCEvery)
	}
}

// TestSessionCollectorReleasesAfterBurst: once sessionGCEvery sessions
// have opened, the first burstQuiet without an opening ends in one
// release (a cycle and free memory back to the system), not before, and
// not while a window's cycle runs; the next needs sessionGCEvery more.
func TestSessionCollectorReleasesAfterBurst(t *testing.T) {
	f := newFakeCollector()
	f.openN(sessionGCEvery - 1)
	f.advance(10 * burstQuiet)
	if got, n := f.released.Load(), f.pending(); got != 0 || n != 0 {
		t.Fatalf("%d releases and %d timers after %d sessions, want none", got, n, sessionGCEvery-1)
	}
	f.openN(1)
	if n := f.pending(); n != 1 {
		t.Fatalf("%d release timers after %d sessions, want 1", n, sessionGCEvery)
	}
	// Sessions still opening: the burst goes on, whatever the timer says.
	for range 5 {
		f.advance(burstQuiet / 2)
		f.openN(3)
	}
	if got := f.released.Load(); got != 0 {
		t.Fatalf("released %d times while sessions still opened every %v", got, burstQuiet/2)
	}
	if n := f.pending(); n != 1 {
		t.Fatalf("%d release timers during the burst, want 1", n)
	}
	for f.pending() > 0 {
		f.advance(burstQuiet)
	}
	if got := f.released.Load(); got != 1 {
		t.Fatalf("%d releases once the burst was over, want 1", got)
	}
	// The release's cycle starts the next window: no cycle of the
	// collector's for sessionGCEvery-1 more.
	asked := f.asked.Load()
	f.openN(sessionGCEvery - 1)
	f.advance(10 * burstQuiet)
	if got, n := f.released.Load(), f.pending(); got != 1 || n != 0 {
		t.Fatalf("%d releases and %d timers %d sessions after a release, want 1 and none", got, n, sessionGCEvery-1)
	}
	if got := f.asked.Load(); got != asked {
		t.Fatalf("%d cycles asked for within the window the release started, want none", got-asked)
	}

	// A window's cycle running when the burst ends: the release waits.
	f.openN(1)
	f.running.Store(true)
	f.advance(burstQuiet)
	if got, n := f.released.Load(), f.pending(); got != 1 || n != 1 {
		t.Fatalf("%d releases and %d timers while a cycle ran, want 1 and 1", got, n)
	}
	f.running.Store(false)
	f.advance(burstQuiet)
	if got := f.released.Load(); got != 2 {
		t.Fatalf("%d releases after the cycle ended, want 2", got)
	}
}

// TestSessionCollectorDuringItsCycle: sessions that open while the cycle
// it asked for still runs (a fast burst) start the next window; that cycle
// is not taken for the runtime's when the window fills.
func TestSessionCollectorDuringItsCycle(t *testing.T) {
	f := newFakeCollector()
	gate := make(chan struct{})
	collect := f.collect
	f.collect = func() { <-gate; collect() }
	for range sessionGCEvery {
		f.sessionOpened()
	}
	if !f.running.Load() {
		t.Fatalf("no cycle asked for after %d sessions", sessionGCEvery)
	}
	f.sessionOpened() // opens while the cycle runs
	close(gate)
	for f.running.Load() {
		time.Sleep(time.Millisecond)
	}
	f.openN(sessionGCEvery - 1)
	if got := f.asked.Load(); got != 2 {
		t.Fatalf("%d cycles after %d sessions in a burst, want 2", got, 2*sessionGCEvery)
	}
}

// TestUpgradedSessionsCounted: the dialer's collector counts each detached
// session open while it is and closed once when it ends, whichever side
// ends it (the rule for how often it collects depends on the count).
func TestUpgradedSessionsCounted(t *testing.T) {
	appSides(t, func(t *testing.T, watch func(*testEnv) *testEnv) {
		e := watch(newEnv(t, nil).start())
		app := rawUpgradeApp(t)
		port := appPort(t, app)
		e.agents.set(port, app.Listener.Addr().String())
		tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))

		base := upgradeGC.open.Load()
		const sessions = 12
		var conns []net.Conn
		for range sessions {
			conns = append(conns, openPinged(t, e.addr, tok))
		}
		if got := upgradeGC.open.Load() - base; got != sessions {
			t.Fatalf("%d sessions counted open, want %d", got, sessions)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for upgradeGC.open.Load() != base {
			if time.Now().After(deadline) {
				t.Fatalf("%d sessions still counted open after the clients closed", upgradeGC.open.Load()-base)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}
