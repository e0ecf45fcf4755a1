package coordinate_test

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	devcoord "github.com/wsedge/wsedge/dev/coord"
	"github.com/wsedge/wsedge/tailnet/coordinate"
)

type pair struct {
	p         *primary
	agentID   uuid.UUID
	agentNode *fakeNode
	agent     *coordinate.AgentClient
	proxyNode *fakeNode
	proxy     *coordinate.Client
}

// slow keeps the fallback timers out of the way, so that readiness and
// removal observed by a test come from the protocol, not from a timeout.
const slow = time.Hour

func startAgent(t *testing.T, p *primary, id uuid.UUID, node *fakeNode) *coordinate.AgentClient {
	t.Helper()
	a, err := coordinate.NewAgent(context.Background(), coordinate.AgentOptions{
		URL: p.url, AgentToken: p.addAgent(id), Node: node, Logger: testLogger(),
		LostTimeout: slow, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func startProxy(t *testing.T, p *primary, node *fakeNode, opts coordinate.Options) *coordinate.Client {
	t.Helper()
	opts.URL, opts.ProxyToken, opts.Node, opts.Logger = p.url, p.proxyToken, node, testLogger()
	if opts.LostTimeout == 0 {
		opts.LostTimeout = slow
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = slow
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	}
	c, err := coordinate.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newPair(t *testing.T, opts coordinate.Options) *pair {
	t.Helper()
	pr := &pair{p: newPrimary(t, devcoord.Options{}), agentID: uuid.New()}
	pr.agentNode = newFakeNode(agentIP(pr.agentID))
	pr.agent = startAgent(t, pr.p, pr.agentID, pr.agentNode)
	pr.proxyNode = newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1234"))
	pr.proxy = startProxy(t, pr.p, pr.proxyNode, opts)
	eventually(t, "both connected", func() bool { return pr.agent.Connected() && pr.proxy.Connected() })
	return pr
}

func ensure(t *testing.T, c *coordinate.Client, agent uuid.UUID) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	release, err := c.EnsureTunnel(ctx, agent)
	if err != nil {
		t.Fatalf("EnsureTunnel: %v", err)
	}
	return release
}

func TestAddTunnelExchangesNodesAndRelaysReady(t *testing.T) {
	pr := newPair(t, coordinate.Options{})
	release := ensure(t, pr.proxy, pr.agentID)
	defer release()

	// The proxy has the agent's node, byte for byte, and was told ready by
	// the agent (ReadyTimeout is an hour, so this is the relayed ack).
	got, ok := pr.proxyNode.has(pr.agentID)
	if !ok {
		t.Fatal("proxy node has no agent peer after EnsureTunnel")
	}
	want := pr.agentNode.Self()
	if got.Key != want.Key || got.DiscoKey != want.DiscoKey || got.PreferredDERP != 999 ||
		got.Addresses[0] != want.Addresses[0] || got.Endpoints[0] != want.Endpoints[0] || !got.AsOf.Equal(want.AsOf) {
		t.Errorf("agent node at proxy = %+v, want %+v", got, want)
	}
	if !pr.proxyNode.isReady(pr.agentID) {
		t.Error("agent peer not marked ready at the proxy")
	}
	// The agent has the proxy's node under the peer ID coderd assigned.
	proxyPeer, ok := pr.agentNode.peerWithKey(pr.proxyNode.Self().Key)
	if !ok {
		t.Fatal("agent node has no proxy peer")
	}
	if !pr.agentNode.isReady(proxyPeer) {
		t.Error("proxy peer not marked ready at the agent")
	}
	if peers := pr.agent.Peers(); len(peers) != 1 || peers[0] != proxyPeer {
		t.Errorf("agent peers = %v, want [%v]", peers, proxyPeer)
	}
	st := pr.proxy.Stats()
	if st.Tunnels != 1 || st.ReadyTunnels != 1 || st.OpenConnections != 1 || !st.Connected || st.Sessions != 1 {
		t.Errorf("stats = %+v", st)
	}

	// A second user of the same tunnel returns at once and is counted.
	r2 := ensure(t, pr.proxy, pr.agentID)
	if st := pr.proxy.Stats(); st.OpenConnections != 2 || st.Tunnels != 1 {
		t.Errorf("stats after second EnsureTunnel = %+v", st)
	}
	r2()
	r2() // release is idempotent
	if st := pr.proxy.Stats(); st.OpenConnections != 1 {
		t.Errorf("open connections after release = %d, want 1", st.OpenConnections)
	}

	// update_self on change: the agent sees the proxy's new endpoint.
	ep := netip.MustParseAddrPort("127.0.0.1:50000")
	pr.proxyNode.setEndpoint(ep)
	eventually(t, "agent sees the proxy's new endpoint", func() bool {
		ni, ok := pr.agentNode.has(proxyPeer)
		return ok && len(ni.Endpoints) == 1 && ni.Endpoints[0] == ep
	})
}

func TestEnsureTunnelWaitsForAgent(t *testing.T) {
	p := newPrimary(t, devcoord.Options{})
	agentID := uuid.New()
	proxyNode := newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1"))
	proxy := startProxy(t, p, proxyNode, coordinate.Options{})
	eventually(t, "proxy connected", proxy.Connected)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := proxy.EnsureTunnel(ctx, agentID)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("EnsureTunnel to an absent agent: %v, want deadline exceeded", err)
	}
	if st := proxy.Stats(); st.OpenConnections != 0 {
		t.Errorf("a failed EnsureTunnel left %d open connections", st.OpenConnections)
	}

	// The agent comes up later: the tunnel added earlier brings it together.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		release, err := proxy.EnsureTunnel(ctx, agentID)
		if err == nil {
			release()
		}
		done <- err
	}()
	agentNode := newFakeNode(agentIP(agentID))
	startAgent(t, p, agentID, agentNode)
	if err := <-done; err != nil {
		t.Fatalf("EnsureTunnel after the agent connected: %v", err)
	}
	if !proxyNode.isReady(agentID) {
		t.Error("agent not ready at the proxy")
	}
}

func TestProxyCloseSendsDisconnect(t *testing.T) {
	pr := newPair(t, coordinate.Options{})
	ensure(t, pr.proxy, pr.agentID)()
	proxyPeer, ok := pr.agentNode.peerWithKey(pr.proxyNode.Self().Key)
	if !ok {
		t.Fatal("agent has no proxy peer")
	}
	if err := pr.proxy.Close(); err != nil {
		t.Fatal(err)
	}
	// DISCONNECTED removes at once; LOST would keep it for an hour here.
	eventually(t, "agent removes the disconnected proxy", func() bool {
		_, ok := pr.agentNode.has(proxyPeer)
		return !ok
	})
	if _, err := pr.proxy.EnsureTunnel(context.Background(), pr.agentID); !errors.Is(err, coordinate.ErrClosed) {
		t.Errorf("EnsureTunnel after Close: %v, want ErrClosed", err)
	}
	eventually(t, "coordinator forgets the proxy", func() bool {
		peers, tunnels := pr.p.coord.Stats()
		return peers == 1 && tunnels == 0
	})
}

func TestAgentDisconnectAndReturn(t *testing.T) {
	pr := newPair(t, coordinate.Options{})
	release := ensure(t, pr.proxy, pr.agentID)
	defer release()
	if err := pr.agent.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "proxy removes the disconnected agent", func() bool {
		_, ok := pr.proxyNode.has(pr.agentID)
		return !ok
	})
	if st := pr.proxy.Stats(); st.Tunnels != 1 || st.ReadyTunnels != 0 {
		t.Errorf("stats after agent left = %+v, want the tunnel kept but not ready", st)
	}
	// The agent restarts with a new key: the proxy gets it without re-adding.
	node2 := newFakeNode(agentIP(pr.agentID))
	startAgent(t, pr.p, pr.agentID, node2)
	r := ensure(t, pr.proxy, pr.agentID)
	r()
	ni, ok := pr.proxyNode.has(pr.agentID)
	if !ok || ni.Key != node2.Self().Key {
		t.Errorf("proxy has agent node %v (ok=%v), want the new key", ni.Key, ok)
	}
}

func TestConnectionCutMarksLostAndReconnectReAddsTunnels(t *testing.T) {
	pr := newPair(t, coordinate.Options{})
	release := ensure(t, pr.proxy, pr.agentID)
	defer release()
	oldProxyPeer, _ := pr.agentNode.peerWithKey(pr.proxyNode.Self().Key)
	upsertsBefore, _ := pr.proxyNode.counts(pr.agentID)

	pr.p.lis.cutAll()

	eventually(t, "proxy reconnects", func() bool { return pr.proxy.Stats().Sessions >= 2 && pr.proxy.Connected() })
	eventually(t, "agent reconnects", pr.agent.Connected)
	// The tunnel is re-added, so the proxy is sent the agent's node again
	// and the agent gets the proxy under its new peer ID.
	eventually(t, "proxy re-receives the agent node", func() bool {
		n, _ := pr.proxyNode.counts(pr.agentID)
		return n > upsertsBefore
	})
	eventually(t, "agent has the proxy under a new peer ID", func() bool {
		id, ok := pr.agentNode.peerWithKey(pr.proxyNode.Self().Key)
		return ok && id != oldProxyPeer
	})
	// Lost is not removed: the agent peer was never taken off the proxy.
	if _, removed := pr.proxyNode.counts(pr.agentID); removed != 0 {
		t.Errorf("agent peer removed %d times at the proxy across a reconnect", removed)
	}
	// The old proxy peer ID at the agent was replaced, since it carries the
	// same key as the new one.
	if _, removed := pr.agentNode.counts(oldProxyPeer); removed != 1 {
		t.Errorf("old proxy peer removed %d times at the agent, want 1", removed)
	}
	eventually(t, "one tunnel on the coordinator", func() bool {
		peers, tunnels := pr.p.coord.Stats()
		return peers == 2 && tunnels == 1
	})
	if pr.proxy.LastError() == nil {
		t.Error("LastError is nil after a cut connection")
	}
}

func TestLostPeerExpires(t *testing.T) {
	clock := newFakeClock()
	p := newPrimary(t, devcoord.Options{})
	agentID := uuid.New()
	agentNode := newFakeNode(agentIP(agentID))
	agentCtx, stopAgent := context.WithCancel(context.Background())
	a, err := coordinate.NewAgent(agentCtx, coordinate.AgentOptions{URL: p.url, AgentToken: p.addAgent(agentID), Node: agentNode, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	proxyNode := newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1"))
	proxy := startProxy(t, p, proxyNode, coordinate.Options{Clock: clock, LostTimeout: 15 * time.Minute, ReadyTimeout: slow})
	release := ensure(t, proxy, agentID)
	defer release()

	// Cancelling the agent's context drops its stream without disconnect:
	// the coordinator reports LOST, and the proxy keeps the peer for now.
	stopAgent()
	t.Cleanup(func() { _ = a.Close() })
	time.Sleep(100 * time.Millisecond)
	if _, ok := proxyNode.has(agentID); !ok {
		t.Fatal("lost agent removed at once")
	}
	clock.Advance(14 * time.Minute)
	time.Sleep(50 * time.Millisecond)
	if _, ok := proxyNode.has(agentID); !ok {
		t.Fatal("lost agent removed before LostTimeout")
	}
	clock.Advance(time.Minute)
	eventually(t, "lost agent removed after LostTimeout", func() bool {
		_, ok := proxyNode.has(agentID)
		return !ok
	})
}

func TestIdleTunnelRemoval(t *testing.T) {
	clock := newFakeClock()
	pr := &pair{p: newPrimary(t, devcoord.Options{}), agentID: uuid.New()}
	pr.agentNode = newFakeNode(agentIP(pr.agentID))
	pr.agent = startAgent(t, pr.p, pr.agentID, pr.agentNode)
	pr.proxyNode = newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1"))
	pr.proxy = startProxy(t, pr.p, pr.proxyNode, coordinate.Options{Clock: clock})
	busyAgent := uuid.New()
	busyNode := newFakeNode(agentIP(busyAgent))
	startAgent(t, pr.p, busyAgent, busyNode)

	ensure(t, pr.proxy, pr.agentID)() // used once, released at t=0
	holdBusy := ensure(t, pr.proxy, busyAgent)
	defer holdBusy()
	proxyPeer, _ := pr.agentNode.peerWithKey(pr.proxyNode.Self().Key)

	sweeps := func(n uint64) func() bool { return func() bool { return pr.proxy.Stats().Sweeps >= n } }
	for i := 1; i <= 5; i++ { // t = 5..25 min: idle, but not for 30 min yet
		clock.Advance(5 * time.Minute)
		eventually(t, "sweep", sweeps(uint64(i)))
	}
	if st := pr.proxy.Stats(); st.Tunnels != 2 {
		t.Fatalf("tunnels at 25 min = %d, want 2", st.Tunnels)
	}
	clock.Advance(5 * time.Minute) // t = 30 min
	eventually(t, "sweep", sweeps(6))
	if st := pr.proxy.Stats(); st.Tunnels != 1 || st.OpenConnections != 1 {
		t.Fatalf("stats at 30 min = %+v, want only the busy tunnel", st)
	}
	if _, ok := pr.proxyNode.has(pr.agentID); ok {
		t.Error("idle agent peer still installed at the proxy")
	}
	// remove_tunnel reached the coordinator, which told the agent.
	eventually(t, "agent drops the proxy after remove_tunnel", func() bool {
		_, ok := pr.agentNode.has(proxyPeer)
		return !ok
	})
	eventually(t, "coordinator has one tunnel", func() bool {
		_, tunnels := pr.p.coord.Stats()
		return tunnels == 1
	})
	// Using the agent again opens a fresh tunnel.
	ensure(t, pr.proxy, pr.agentID)()
	if st := pr.proxy.Stats(); st.Tunnels != 2 {
		t.Errorf("tunnels after reuse = %d, want 2", st.Tunnels)
	}
}

func TestDERPMapStreamingAndLiveUpdate(t *testing.T) {
	p := newPrimary(t, devcoord.Options{DERPMapUpdateInterval: slow})
	region := func(id int, host string) *tailcfg.DERPMap {
		return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{id: {
			RegionID: id, RegionCode: "coder", RegionName: "Coder",
			Nodes: []*tailcfg.DERPNode{{Name: "1a", RegionID: id, HostName: host, DERPPort: 3000, STUNPort: -1}},
		}}}
	}
	p.coord.SetDERPMap(region(999, "127.0.0.1"))
	node := newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1"))
	startProxy(t, p, node, coordinate.Options{})
	eventually(t, "first DERP map", func() bool {
		m := node.lastDERP()
		return m != nil && m.Regions[999] != nil && m.Regions[999].Nodes[0].HostName == "127.0.0.1" && m.Regions[999].Nodes[0].DERPPort == 3000
	})
	// Pushed at once (the poll interval is an hour).
	p.coord.SetDERPMap(region(10001, "derp.example.test"))
	eventually(t, "updated DERP map", func() bool {
		m := node.lastDERP()
		return m != nil && m.Regions[10001] != nil && m.Regions[999] == nil
	})
}

func TestWrongTokenIsAHandshakeError(t *testing.T) {
	p := newPrimary(t, devcoord.Options{})
	node := newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1"))
	c, err := coordinate.New(context.Background(), coordinate.Options{
		URL: p.url, ProxyToken: "wrong", Node: node, Logger: testLogger(), MinBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, "a recorded failure", func() bool { return c.LastError() != nil })
	var he *coordinate.HandshakeError
	if err := c.LastError(); !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized || he.Message != "Invalid external proxy token" {
		t.Fatalf("LastError = %v, want a 401 HandshakeError with coderd's message", err)
	}
	if c.Connected() {
		t.Error("Connected with a wrong token")
	}
}

func TestOptionsValidation(t *testing.T) {
	node := newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1"))
	for _, opts := range []coordinate.Options{
		{ProxyToken: "x", Node: node},
		{URL: mustURL("ftp://x"), ProxyToken: "x", Node: node},
		{URL: mustURL("http://x"), Node: node},
		{URL: mustURL("http://x"), ProxyToken: "x"},
	} {
		if c, err := coordinate.New(context.Background(), opts); err == nil {
			_ = c.Close()
			t.Errorf("New(%+v) succeeded", opts)
		}
	}
}

func TestConcurrentEnsureTunnelOpensOneTunnel(t *testing.T) {
	pr := newPair(t, coordinate.Options{})
	const n = 20
	releases := make(chan func(), n)
	errs := make(chan error, n)
	for range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := pr.proxy.EnsureTunnel(ctx, pr.agentID)
			if err != nil {
				errs <- err
				return
			}
			releases <- r
		}()
	}
	for range n {
		select {
		case err := <-errs:
			t.Fatal(err)
		case r := <-releases:
			defer r()
		}
	}
	if st := pr.proxy.Stats(); st.Tunnels != 1 || st.OpenConnections != n {
		t.Errorf("stats = %+v, want 1 tunnel with %d connections", st, n)
	}
	if _, tunnels := pr.p.coord.Stats(); tunnels != 1 {
		t.Errorf("coordinator tunnels = %d, want 1", tunnels)
	}
	if up, _ := pr.proxyNode.counts(pr.agentID); up != 1 {
		t.Errorf("agent node installed %d times, want 1", up)
	}
}

// TestAgentGoneCallback: the proxy hears at once when the coordinator
// reports an agent DISCONNECTED or LOST, and may release that agent's
// tunnel from the callback (as closing a pooled connection does).
func TestAgentGoneCallback(t *testing.T) {
	for _, tt := range []struct {
		name  string
		leave func(*coordinate.AgentClient, context.CancelFunc)
	}{
		{"disconnected", func(a *coordinate.AgentClient, _ context.CancelFunc) { _ = a.Close() }},
		// Cancelling the agent's context drops its stream without
		// disconnect: the coordinator reports LOST.
		{"lost", func(_ *coordinate.AgentClient, stop context.CancelFunc) { stop() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPrimary(t, devcoord.Options{})
			agentID := uuid.New()
			agentCtx, stopAgent := context.WithCancel(context.Background())
			a, err := coordinate.NewAgent(agentCtx, coordinate.AgentOptions{URL: p.url, AgentToken: p.addAgent(agentID), Node: newFakeNode(agentIP(agentID)), Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { stopAgent(); _ = a.Close() })
			// release is set before the agent leaves; the mutex gives the
			// callback's goroutine that ordering.
			var (
				mu      sync.Mutex
				release func()
			)
			gone := make(chan uuid.UUID, 4)
			proxy := startProxy(t, p, newFakeNode(netip.MustParseAddr("fd7a:115c:a1e0::1")), coordinate.Options{AgentGone: func(id uuid.UUID) {
				mu.Lock()
				r := release
				mu.Unlock()
				r() // would deadlock if called under the peer lock
				gone <- id
			}})
			r := ensure(t, proxy, agentID)
			mu.Lock()
			release = r
			mu.Unlock()
			tt.leave(a, stopAgent)
			select {
			case id := <-gone:
				if id != agentID {
					t.Errorf("AgentGone(%s), want %s", id, agentID)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("AgentGone not called")
			}
			eventually(t, "connection released", func() bool { return proxy.Stats().OpenConnections == 0 })
		})
	}
}
