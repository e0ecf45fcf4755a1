package dialer

import (
	"runtime"
	rtmetrics "runtime/metrics"
	"sync/atomic"
)

// What opening a websocket allocates in the dialer (net/http's two 4 KiB
// buffers for Envoy's connection, the request and its copy for the app,
// the userspace TCP handshake: about 35 KB) is garbage once the session
// is detached, but nothing collects it soon: the collector's headroom is
// set by the tailnet's packet buffers (about 35 MB live before the first
// session), so a burst of a thousand sessions (every browser
// reconnecting after a rollout) opens without a cycle, and each session
// keeps its opening's garbage in RSS until requests drive the next one.
// sessionCollector asks for a cycle once a number of sessions has opened
// since the last one, the runtime's or its own: sessionGCEvery, or an
// eighth of the sessions open when there are more, so that a cycle,
// which costs about as much as the live sessions it marks, costs each
// opening the same however many are open, and a burst leaves the garbage
// of at most that many sessions behind. Requests never cause one, and
// under load the runtime's own cycles come first.
const sessionGCEvery = 128

type sessionCollector struct {
	// open is the upgraded sessions open; since, those opened since the
	// last cycle was asked for or seen.
	open, since atomic.Int64
	running     atomic.Bool
	// cycles is the runtime's cycle count when the first of the sessions
	// since opened.
	cycles atomic.Uint64
	// collect and count are runtime.GC and gcCycles but in tests.
	collect func()
	count   func() uint64
}

var upgradeGC = sessionCollector{collect: runtime.GC, count: gcCycles}

// sessionOpened counts a detached session; it returns the function that
// counts it closed.
func (g *sessionCollector) sessionOpened() (closed func()) {
	open, n := g.open.Add(1), g.since.Add(1)
	if n == 1 {
		g.cycles.Store(g.count())
	}
	if n >= max(sessionGCEvery, open/8) && g.running.CompareAndSwap(false, true) {
		seen := g.cycles.Load()
		g.since.Store(0)
		go func() {
			defer g.running.Store(false)
			if g.count() == seen {
				g.collect()
			} // else the runtime collected meanwhile: most of the garbage is gone
			// The sessions opened while this ran count from this cycle
			// on, not from the one before it (which would let the next
			// window take this cycle for the runtime's and skip its own).
			g.cycles.Store(g.count())
		}()
	}
	return func() { g.open.Add(-1) }
}

// gcCycles is how many GC cycles the runtime has completed.
func gcCycles() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
