package tailnet

import (
	"context"
	"errors"
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
