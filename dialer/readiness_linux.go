//go:build linux

package dialer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// readinessPoller tells when idle client connections of upgraded sessions
// have bytes to read: one epoll instance and one goroutine for all of
// them. A goroutine blocked in Read holds its stack (4 KiB at least,
// after the runtime shrinks it) and its buffer for as long as the
// session is idle; with the poller, the client → app direction of an idle
// websocket holds neither, and a goroutine runs only while bytes flow
// (upgradedSession.pumpFromClient).
//
// Each watched connection is registered one-shot: an event disarms it
// until the pump that handled it has read the socket empty and re-arms
// it, so at most one pump per connection runs at a time. Readiness is
// level-triggered, so bytes that arrive between the pump's last read and
// its re-arm are reported at once.
type readinessPoller struct {
	epfd   int
	wakefd int // an eventfd that ends run's wait

	// mu guards the following. Re-arming a connection (every burst of
	// every session) only reads them: it takes mu shared.
	mu      sync.RWMutex
	closed  bool // epfd and wakefd are closed (their numbers may be reused)
	next    uint64
	waiters map[uint64]*readinessWaiter
}

// wakeID is the event data of the wake eventfd; waiters count from 1.
const wakeID = 0

func newReadinessPoller() (*readinessPoller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventID(&ev, wakeID)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return &readinessPoller{epfd: epfd, wakefd: wakefd, waiters: map[uint64]*readinessWaiter{}}, nil
}

// setEventID stores id in the event's 64-bit data (Fd and Pad are its
// two halves in x/sys/unix).
func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// run waits for readiness and starts each ready waiter's callback on a
// goroutine of its own, until ctx ends; then it closes the poller:
// waiters still registered are told (their callbacks run, and find the
// poller closed when they re-arm).
func (p *readinessPoller) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		p.mu.RLock()
		defer p.mu.RUnlock()
		if !p.closed {
			_, _ = unix.Write(p.wakefd, one[:])
		}
	})
	defer stop()
	events := make([]unix.EpollEvent, 64)
	for ctx.Err() == nil {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			break // cannot happen with a valid epfd and buffer
		}
		for i := range events[:n] {
			if id := eventID(&events[i]); id != wakeID {
				p.fire(id)
			}
		}
		if n > 0 {
			// Let the pumps just started run on this P before the wait:
			// a goroutine blocked in a system call keeps its P until
			// the runtime takes it back (20 µs or more).
			runtime.Gosched()
		}
	}
	p.mu.Lock()
	p.closed = true
	left := p.waiters
	p.waiters = nil
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.wakefd)
	p.mu.Unlock()
	for _, w := range left {
		w.fireReady() // an armed waiter's owner finds out: arm fails
	}
}

func (p *readinessPoller) fire(id uint64) {
	p.mu.RLock()
	w := p.waiters[id]
	p.mu.RUnlock()
	if w != nil {
		w.fireReady()
	}
}

// errPollerClosed: the poller stopped (the server is shutting down).
var errPollerClosed = errors.New("readiness poller closed")

// readinessWaiter is one watched connection.
type readinessWaiter struct {
	p     *readinessPoller
	id    uint64
	rc    syscall.RawConn
	ready func() // run on its own goroutine when the connection is readable

	mu sync.Mutex
	// mu guards the following.
	added   bool // registered with epoll
	running bool // ready is running (or about to): not armed
	stopped bool
}

// watch prepares to tell when c is readable; nil if c has no file
// descriptor to poll (then the caller reads it with a goroutine). The
// waiter starts unarmed and "running": its owner reads first and arms it
// when the connection has nothing more to read.
func (p *readinessPoller) watch(c net.Conn, ready func()) *readinessWaiter {
	if p == nil {
		return nil
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.next++
	w := &readinessWaiter{p: p, id: p.next, rc: rc, ready: ready, running: true}
	p.waiters[w.id] = w
	return w
}

// arm asks to be told (once) when the connection is readable: ready then
// runs on a new goroutine. Only the owner of the running state (the
// code that started the waiter or the ready callback) calls it.
func (w *readinessWaiter) arm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return errSessionCut
	}
	w.p.mu.RLock()
	defer w.p.mu.RUnlock()
	if w.p.closed {
		return errPollerClosed
	}
	op := unix.EPOLL_CTL_MOD
	if !w.added {
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventID(&ev, w.id)
	if err := w.epollCtl(op, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	// An event cannot be handled before this: fireReady waits for w.mu.
	w.added, w.running = true, false
	return nil
}

// epollCtl applies op to the connection's registration; w.p.mu is held
// (shared at least) and the poller open. The connection's file descriptor cannot be closed
// (and its number reused) while Control runs.
func (w *readinessWaiter) epollCtl(op int, ev *unix.EpollEvent) error {
	var cerr error
	if err := w.rc.Control(func(fd uintptr) { cerr = unix.EpollCtl(w.p.epfd, op, int(fd), ev) }); err != nil {
		return err
	}
	return cerr
}

// fireReady runs ready unless the waiter stopped or is running.
func (w *readinessWaiter) fireReady() {
	w.mu.Lock()
	if w.stopped || w.running {
		w.mu.Unlock()
		return
	}
	w.running = true
	w.mu.Unlock()
	go w.ready()
}

// stop ends the watch: the connection is no longer polled, and ready
// will not be started again. It reports whether ready was not running
// (the waiter was armed): then nothing else will report the end of the
// direction it served, and the caller must.
func (w *readinessWaiter) stop() (idle bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	w.stopped = true
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.added && !w.p.closed {
		// A closed connection left epoll with its last descriptor.
		_ = w.epollCtl(unix.EPOLL_CTL_DEL, nil)
	}
	if w.p.waiters != nil {
		delete(w.p.waiters, w.id)
	}
	return !w.running
}

// wouldBlock: readNow found nothing to read.
func wouldBlock(err error) bool { return errors.Is(err, unix.EAGAIN) }

// readNow reads what c's socket holds without waiting: n == 0 with a nil
// error is the end of the stream; unix.EAGAIN means nothing to read now.
func readNow(rc syscall.RawConn, b []byte) (n int, err error) {
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), b)
			if err != unix.EINTR {
				return true
			}
		}
	})
	if cerr != nil {
		return 0, cerr
	}
	if n < 0 {
		n = 0
	}
	return n, err
}
