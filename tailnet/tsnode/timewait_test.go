package tsnode

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestDialsWhenTheAgentClosesFirst: a server that closes its side first
// (as a websocket server does) leaves each connection in TIME-WAIT on the
// agent for a minute, and gVisor drops a SYN that reuses such a 4-tuple.
// Hundreds of short connections must all succeed promptly: a dial whose
// handshake gets no answer is retried from a new port instead of waiting
// out the dial timeout.
func TestDialsWhenTheAgentClosesFirst(t *testing.T) {
	proxy, agent, agentID := twoNodes(t, Options{})
	ln, err := agent.Listen(9000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("bye"))
			_ = c.Close() // the agent closes first: TIME-WAIT is on its side
		}
	}()
	const n = 600
	start := time.Now()
	var slowest time.Duration
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		t0 := time.Now()
		c, err := proxy.Dial(ctx, agentID, 9000)
		if err != nil {
			cancel()
			t.Fatalf("dial %d of %d: %v (after %v)", i+1, n, err, time.Since(t0))
		}
		b, err := io.ReadAll(c)
		_ = c.Close()
		cancel()
		if err != nil || string(b) != "bye" {
			t.Fatalf("dial %d: read %q, %v", i+1, b, err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("%d dials in %v, slowest %v, %d handshakes retried from a new port", n, time.Since(start), slowest, proxy.DialRetries())
}
