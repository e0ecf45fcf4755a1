package coordinate_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/uuid"

	devcoord "github.com/wsedge/wsedge/dev/coord"
	"github.com/wsedge/wsedge/tailnet/coordinate"
)

// BenchmarkTunnelReady measures EnsureTunnel for a connected agent: add_tunnel
// → the agent's node back → the agent's ready_for_handshake relayed, through
// devcoord over loopback websocket+yamux+DRPC.
func BenchmarkTunnelReady(b *testing.B) {
	p := newPrimary(b, devcoord.Options{})
	proxyNode := newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1"))
	proxy, err := coordinate.New(context.Background(), coordinate.Options{
		URL: p.url, ProxyToken: p.proxyToken, Node: proxyNode, Logger: testLogger(), ReadyTimeout: slow,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	for b.Loop() {
		b.StopTimer()
		id := uuid.New()
		a, err := coordinate.NewAgent(context.Background(), coordinate.AgentOptions{
			URL: p.url, AgentToken: p.addAgent(id), Node: newFakeNode(agentIP(id)), Logger: testLogger(),
		})
		if err != nil {
			b.Fatal(err)
		}
		for !a.Connected() || !proxy.Connected() {
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
		release, err := proxy.EnsureTunnel(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		release()
		_ = a.Close()
		b.StartTimer()
	}
}
