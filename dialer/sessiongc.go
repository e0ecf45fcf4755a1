package dialer

import (
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync/atomic"
	"time"
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
//
// A cycle frees garbage but gives no page back: the runtime returns free
// memory only above its heap goal, which the packet buffers set far above
// a dialer's RSS, so the pages a burst's last window of garbage and the
// tailnet's grown buffer pools took would stay in RSS for good (about 2 KB
// per session after a thousand-session burst). So once a burst is over (no
// session opened for burstQuiet, at least sessionGCEvery opened since the
// last release) the collector runs one more cycle and returns every free
// page to the system: one cycle per burst, never more than one per
// sessionGCEvery openings.
const sessionGCEvery = 128

// burstQuiet is how long no session opens before a burst counts as over.
const burstQuiet = 250 * time.Millisecond

type sessionCollector struct {
	// open is the upgraded sessions open; since, those opened since the
	// last cycle was asked for or seen.
	open, since atomic.Int64
	running     atomic.Bool
	// cycles is the runtime's cycle count when the first of the sessions
	// since opened.
	cycles atomic.Uint64
	// sinceRelease is the sessions opened since the last release;
	// lastOpen, when the latest opened (now's reading); armed, whether a
	// release is waiting for the burst to end.
	sinceRelease, lastOpen atomic.Int64
	armed                  atomic.Bool
	// collect, count and release are runtime.GC, gcCycles and
	// debug.FreeOSMemory, now the monotonic time since the process
	// started, after time.AfterFunc, and quiet burstQuiet, but in tests.
	collect func()
	count   func() uint64
	release func()
	now     func() time.Duration
	after   func(time.Duration, func())
	quiet   time.Duration
}

// processStart is what upgradeGC's clock counts from.
var processStart = time.Now()

var upgradeGC = sessionCollector{
	collect: runtime.GC, count: gcCycles, release: debug.FreeOSMemory,
	now:   func() time.Duration { return time.Since(processStart) },
	after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }, quiet: burstQuiet,
}

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
	g.lastOpen.Store(int64(g.now()))
	if g.sinceRelease.Add(1) >= sessionGCEvery && g.armed.CompareAndSwap(false, true) {
		g.after(g.quiet, g.releaseIfQuiet)
	}
	return func() { g.open.Add(-1) }
}

// releaseIfQuiet runs a cycle and returns free memory to the system once
// no session has opened for quiet (and no cycle of the collector's runs);
// until then it waits again.
func (g *sessionCollector) releaseIfQuiet() {
	wait := g.quiet - (g.now() - time.Duration(g.lastOpen.Load()))
	if wait > 0 {
		g.after(wait, g.releaseIfQuiet)
		return
	}
	if !g.running.CompareAndSwap(false, true) {
		g.after(g.quiet, g.releaseIfQuiet)
		return
	}
	defer g.running.Store(false)
	g.sinceRelease.Store(0)
	g.since.Store(0) // the release's cycle starts the next window too
	g.armed.Store(false)
	g.release()
	g.cycles.Store(g.count())
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
