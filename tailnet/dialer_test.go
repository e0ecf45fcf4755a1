package tailnet

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/google/uuid"
)

type fakeTunnels struct {
	mu       sync.Mutex
	open     map[uuid.UUID]int
	err      error
	released int
}

func (f *fakeTunnels) EnsureTunnel(_ context.Context, id uuid.UUID) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.open == nil {
		f.open = map[uuid.UUID]int{}
	}
	f.open[id]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.open[id]--
		f.released++
	}, nil
}

type pipeNode struct{ err error }

func (n pipeNode) Dial(context.Context, uuid.UUID, uint16) (net.Conn, error) {
	if n.err != nil {
		return nil, n.err
	}
	a, b := net.Pipe()
	go func() { _, _ = b.Write([]byte("hi")); _ = b.Close() }()
	return a, nil
}

func TestDialerHoldsTheTunnelWhileTheConnectionIsOpen(t *testing.T) {
	tun := &fakeTunnels{}
	d := Dialer{Tunnels: tun, Node: pipeNode{}}
	agent := uuid.New()
	conn, err := d.DialAgent(context.Background(), agent, 8080)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := conn.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if got := tun.open[agent]; got != 1 {
		t.Fatalf("tunnel refs while open = %d, want 1", got)
	}
	_ = conn.Close()
	_ = conn.Close()
	if tun.open[agent] != 0 || tun.released != 1 {
		t.Fatalf("after two Close calls: refs %d, releases %d; want 0 and 1", tun.open[agent], tun.released)
	}
}

func TestDialerErrors(t *testing.T) {
	agent := uuid.New()
	tunErr := errors.New("coordinator down")
	if _, err := (Dialer{Tunnels: &fakeTunnels{err: tunErr}, Node: pipeNode{}}).DialAgent(context.Background(), agent, 80); !errors.Is(err, tunErr) {
		t.Fatalf("tunnel failure: err = %v", err)
	}
	tun := &fakeTunnels{}
	dialErr := errors.New("no route")
	if _, err := (Dialer{Tunnels: tun, Node: pipeNode{err: dialErr}}).DialAgent(context.Background(), agent, 80); !errors.Is(err, dialErr) {
		t.Fatalf("dial failure: err = %v", err)
	}
	if tun.open[agent] != 0 || tun.released != 1 {
		t.Fatalf("a failed dial must release its tunnel: refs %d, releases %d", tun.open[agent], tun.released)
	}
}

// readyNode dials a loopback TCP server; with ready, its connections are
// ReadinessConns (fake ones: they report what they are asked).
type readyNode struct {
	addr  string
	ready bool
}

type fakeReadiness struct {
	*net.TCPConn
	notified chan func()
}

func (c *fakeReadiness) NotifyReadable(f func()) func() { c.notified <- f; return func() {} }
func (c *fakeReadiness) ReadNow(p []byte) (int, error)  { return 0, ErrWouldBlock }

func (n readyNode) Dial(ctx context.Context, _ uuid.UUID, _ uint16) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", n.addr)
	if err != nil || !n.ready {
		return c, err
	}
	return &fakeReadiness{TCPConn: c.(*net.TCPConn), notified: make(chan func(), 1)}, nil
}

// TestDialerKeepsWhatTheNodeConnectionCan: the tunnel's wrapper passes on
// a node connection's half-close and, when it has them, its readiness
// calls; a connection without them gets none.
func TestDialerKeepsWhatTheNodeConnectionCan(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c) // until the half-close
				_, _ = c.Write([]byte("after " + string(b)))
				got <- string(b)
			}()
		}
	}()
	for _, ready := range []bool{false, true} {
		d := Dialer{Tunnels: &fakeTunnels{}, Node: readyNode{addr: ln.Addr().String(), ready: ready}}
		conn, err := d.DialAgent(context.Background(), uuid.New(), 80)
		if err != nil {
			t.Fatal(err)
		}
		rc, isReady := conn.(ReadinessConn)
		if isReady != ready {
			t.Fatalf("node readiness %v: tunnel connection is a ReadinessConn: %v", ready, isReady)
		}
		if ready {
			called := false
			rc.NotifyReadable(func() { called = true })
			(<-conn.(*readinessTunnelConn).Conn.(*fakeReadiness).notified)()
			if n, err := rc.ReadNow(make([]byte, 1)); n != 0 || !errors.Is(err, ErrWouldBlock) || !called {
				t.Fatalf("readiness calls not passed on: %d, %v, called %v", n, err, called)
			}
		}
		if _, err := conn.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		if b, err := io.ReadAll(conn); err != nil || string(b) != "after hello" {
			t.Fatalf("after the half-close: %q, %v", b, err)
		}
		if s := <-got; s != "hello" {
			t.Fatalf("server read %q", s)
		}
		_ = conn.Close()
	}
	// A node connection that cannot half-close says so.
	conn, err := (Dialer{Tunnels: &fakeTunnels{}, Node: pipeNode{}}).DialAgent(context.Background(), uuid.New(), 80)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite on a pipe: %v, want ErrUnsupported", err)
	}
}
