package tsnode

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tailnet"
)

// Upstream's netstack deadlocks on Close with more than 512 TCP endpoints
// (see closeNetstack); tsnode must close promptly anyway and leave no
// goroutines behind.
func TestCloseWithManyConnectionsReleasesEverything(t *testing.T) {
	d := newTestDERP(t)
	g0 := runtime.NumGoroutine()

	proxy, agent, agentID := func() (*Node, *Node, [16]byte) {
		opts := Options{DERPMap: d.derpMap(), ExtraRootCAs: d.roots, Logger: testLogger(), LoopbackOnly: true}
		p, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		id := [16]byte{0: 1, 15: 2}
		opts.Address = tailnet.AgentAddr(id)
		a, err := New(opts)
		if err != nil {
			p.Close()
			t.Fatal(err)
		}
		return p, a, id
	}()
	if _, ok := linkEndpointOf(proxy.ns); !ok {
		t.Fatal("netstack's link endpoint is no longer reachable: re-check closeNetstack against upstream")
	}
	pair(t, proxy, [16]byte{0: 3}, agent, agentID)
	ln, err := agent.Listen(9000)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns := make([]net.Conn, 0, 600)
	for i := 0; i < 600; i++ {
		c, err := proxy.Dial(ctx, agentID, 9000)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}

	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = proxy.Close()
		_ = agent.Close()
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close with 600 open connections did not return")
	}
	if _, err := conns[0].Write([]byte("x")); err == nil {
		t.Error("connection still writable after Close")
	}
	if _, err := proxy.Dial(ctx, agentID, 9000); err != ErrClosed {
		t.Errorf("Dial after Close = %v, want ErrClosed", err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		g := runtime.NumGoroutine()
		if g <= g0+5 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before the nodes\n%s", g, g0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
