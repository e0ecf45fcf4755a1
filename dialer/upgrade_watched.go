package dialer

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/wsedge/wsedge/tailnet"
)

// A detached session whose app connection is a tailnet.ReadinessConn
// (the synchronous round trip's connections through the tailnet) holds
// no goroutine while it is idle: the client side waits in the server's
// readinessPoller, the app side in its connection's wait queue, and each
// direction is pumped by a goroutine of its own only while bytes flow.
// Without it one goroutine per session waits for the app (its stack and
// what the Go heap's growth keeps beside it: several KiB per open
// websocket).

// appWaiter is readinessWaiter for the app side: the tailnet connection
// calls notify whenever it may have turned readable, from its network
// stack's goroutine; notify starts ready on a goroutine of its own unless
// a pump is already running.
type appWaiter struct {
	rc         tailnet.ReadinessConn
	ready      func()
	unregister func()

	mu sync.Mutex
	// mu guards the following.
	running bool // ready is running (or about to): not armed
	pending bool // notified while running: the pump must read again
	stopped bool
}

// watchApp registers for rc's readiness. The waiter starts "running",
// as readinessWaiter's: its owner reads first and arms it once a read
// finds nothing.
func watchApp(rc tailnet.ReadinessConn, ready func()) *appWaiter {
	w := &appWaiter{rc: rc, ready: ready, running: true}
	w.unregister = rc.NotifyReadable(w.notify)
	return w
}

// notify runs with the connection's wait queue locked: it must not call
// back into the connection (stop unregisters outside w.mu for that
// reason).
func (w *appWaiter) notify() {
	w.mu.Lock()
	switch {
	case w.stopped:
	case w.running:
		w.pending = true
	default:
		w.running = true
		w.mu.Unlock()
		go w.ready()
		return
	}
	w.mu.Unlock()
}

// arm is called by the running pump once a read found nothing. again: a
// notification came since that read, so read again (still running);
// otherwise ready runs at the next notification.
func (w *appWaiter) arm() (again bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false, errSessionCut
	}
	if w.pending {
		w.pending = false
		return true, nil
	}
	w.running = false
	return false, nil
}

// drainTo is a pump's work: it moves what the connection has to dst
// until a read finds nothing, then arms the waiter and returns nil. It
// returns io.EOF at the connection's end of stream, errSessionCut when
// the waiter was stopped, or the read's or write's error.
func (w *appWaiter) drainTo(dst io.Writer) error {
	buf := proxyBuffers.Get()
	defer proxyBuffers.Put(buf)
	for {
		n, err := w.rc.ReadNow(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, tailnet.ErrWouldBlock) {
			return err
		}
		again, err := w.arm()
		if err != nil || !again {
			return err
		}
	}
}

// stop ends the watch, as readinessWaiter.stop: idle reports that no
// pump was running, so the caller must report the direction's end.
func (w *appWaiter) stop() (idle bool) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	w.stopped = true
	idle = !w.running
	w.mu.Unlock()
	w.unregister()
	return idle
}

// appReadiness is the app connection's readiness, when it has one.
func appReadiness(app io.ReadWriteCloser) (*switchedConn, tailnet.ReadinessConn, bool) {
	s, ok := app.(*switchedConn)
	if !ok {
		return nil, nil, false
	}
	rc, ok := s.conn.(tailnet.ReadinessConn)
	return s, rc, ok
}

// watchedSession is a detached session pumped on readiness both ways.
type watchedSession struct {
	b          *upgradedSession
	client     *readinessWaiter
	app        *appWaiter
	appEarly   []byte // what came from the app with its 101: to the client first
	clientDone atomic.Bool
	appDone    atomic.Bool
	left       atomic.Int32
	stopCut    func() bool
	done       func()
}

// startWatched runs the session detached and without an idle goroutine
// when both its connections can say when they are readable; done runs
// once both directions are over and both connections are closed (cut
// closes them early). It reports false, having started nothing, when
// they cannot.
func (b *upgradedSession) startWatched(cut context.Context, poller *readinessPoller, done func()) bool {
	sc, rc, ok := appReadiness(b.app)
	if !ok {
		return false
	}
	s := &watchedSession{b: b, done: done}
	s.left.Store(2)
	s.client = poller.watch(b.client, func() { b.pumpFromClient(s.client, s.finishFromClient, s.end) })
	if s.client == nil {
		return false
	}
	s.appEarly, sc.early = sc.early, nil
	s.app = watchApp(rc, s.pumpFromApp)
	s.stopCut = context.AfterFunc(cut, s.end)
	// Both start running: each reads what is there already and arms.
	go b.pumpFromClient(s.client, s.finishFromClient, s.end)
	go s.pumpFromApp()
	return true
}

// end cuts the session: both connections closed, each direction's end
// reported by its pump, or here when none is running.
func (s *watchedSession) end() {
	if s.client.stop() {
		s.finishFromClient(errSessionCut)
	}
	if s.app.stop() {
		s.finishFromApp(errSessionCut)
	}
	_ = s.b.client.Close()
	_ = s.b.app.Close()
}

func (s *watchedSession) finishFromClient(error) { s.finish(&s.clientDone) }
func (s *watchedSession) finishFromApp(error)    { s.finish(&s.appDone) }

// finish records a direction's end (once); the second closes the session.
func (s *watchedSession) finish(direction *atomic.Bool) {
	if !direction.CompareAndSwap(false, true) || s.left.Add(-1) != 0 {
		return
	}
	s.end()
	s.stopCut()
	s.done()
}

// pumpFromApp moves what the app sent to the client until the app
// connection has nothing more to read, then arms the waiter and returns,
// as pumpFromClient does the other way. The app's end of stream is
// passed on as a half-close; an error ends the session.
func (s *watchedSession) pumpFromApp() {
	fail := func(err error) {
		s.end()
		s.finishFromApp(err)
	}
	if early := s.appEarly; len(early) > 0 {
		s.appEarly = nil
		if _, err := s.b.client.Write(early); err != nil {
			fail(err)
			return
		}
	}
	switch err := s.app.drainTo(s.b.client); {
	case err == nil: // armed: nothing more to read for now
	case errors.Is(err, io.EOF):
		s.app.stop()
		if err := closeWrite(s.b.client); err != nil {
			fail(err)
			return
		}
		s.finishFromApp(nil)
	default:
		fail(err)
	}
}
