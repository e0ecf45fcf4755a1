package dialer

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCollector is a sessionCollector whose cycles are counted, not run;
// runtime is the runtime's own cycles.
type fakeCollector struct {
	sessionCollector
	asked, runtime atomic.Uint64
}

func newFakeCollector() *fakeCollector {
	f := &fakeCollector{}
	f.collect = func() { f.asked.Add(1); f.runtime.Add(1) }
	f.count = f.runtime.Load
	return f
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
