package devagent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	devcoord "github.com/wsedge/wsedge/dev/coord"
	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/coordinate"
)

// recordingNode is a coordinate.Node without WireGuard: it records peers
// and listens on loopback. It checks the coordination wiring; the real
// packet path is tailnet/tsnode's to test.
type recordingNode struct {
	loopbackListen
	mu    sync.Mutex
	self  tailnet.NodeInfo
	peers map[uuid.UUID]tailnet.NodeInfo
	ready map[uuid.UUID]bool
}

func newRecordingNode(addr netip.Addr) *recordingNode {
	p := netip.PrefixFrom(addr, 128)
	return &recordingNode{
		self: tailnet.NodeInfo{
			ID: 7, AsOf: time.Now().UTC().Truncate(time.Millisecond),
			Key: key.NewNode().Public(), DiscoKey: key.NewDisco().Public(), PreferredDERP: 999,
			Addresses: []netip.Prefix{p}, AllowedIPs: []netip.Prefix{p},
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:41641")},
		},
		peers: map[uuid.UUID]tailnet.NodeInfo{},
		ready: map[uuid.UUID]bool{},
	}
}

func (n *recordingNode) Self() tailnet.NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.self
}

func (n *recordingNode) OnSelfChange(f func(tailnet.NodeInfo)) { f(n.Self()) }

func (n *recordingNode) UpsertPeer(id uuid.UUID, ni tailnet.NodeInfo) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.peers[id] = ni
	return nil
}

func (n *recordingNode) RemovePeer(id uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.peers, id)
}

func (n *recordingNode) MarkPeerReady(id uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ready[id] = true
}

func (n *recordingNode) SetDERPMap(*tailcfg.DERPMap) {}

func (n *recordingNode) Listen(port uint16) (net.Listener, error) { return n.listen(port) }

func (n *recordingNode) hasReadyPeer(k key.NodePublic) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, ni := range n.peers {
		if ni.Key == k && n.ready[id] {
			return true
		}
	}
	return false
}

func (n *recordingNode) peer(id uuid.UUID) (tailnet.NodeInfo, bool, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ni, ok := n.peers[id]
	return ni, ok, n.ready[id]
}

func TestRunTailnetCoordinatesAsTheAgent(t *testing.T) {
	agentID := uuid.New()
	proxyID := uuid.New()
	const agentToken = "agent-token"
	const proxyToken = "proxy-token"
	coord := devcoord.New(devcoord.Options{Logger: quietLogger()})
	defer coord.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/workspaceagents/me/rpc", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(coordinate.SessionTokenHeader) != agentToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		coord.ServeAgent(w, r, agentID)
	})
	mux.HandleFunc("GET /api/v2/workspaceproxies/me/coordinate", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(coordinate.ProxyTokenHeader) != proxyToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		coord.ServeProxy(w, r, proxyID)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	primaryURL, _ := url.Parse(srv.URL)

	agentNode := newRecordingNode(tailnet.AgentAddr(agentID))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunTailnet(ctx, TailnetOptions{
			PrimaryURL: primaryURL,
			AgentToken: agentToken,
			Node:       agentNode,
			Agent: Options{
				AgentID: agentID,
				Apps:    []AppSpec{{Port: 8080, Kind: KindHTTP}},
				Logger:  quietLogger(),
				PTY:     PTYOptions{Shell: "/bin/sh"},
			},
		})
	}()

	proxyNode := newRecordingNode(netip.MustParseAddr("fd7a:115c:a1e0::1234"))
	cl, err := coordinate.New(ctx, coordinate.Options{
		URL: primaryURL, ProxyToken: proxyToken, Node: proxyNode, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tctx, tcancel := context.WithTimeout(ctx, 15*time.Second)
	defer tcancel()
	release, err := cl.EnsureTunnel(tctx, agentID)
	if err != nil {
		t.Fatalf("EnsureTunnel: %v", err)
	}
	defer release()

	// The proxy learnt the agent's node, and the agent accepted the proxy
	// and declared it ready.
	got, ok, _ := proxyNode.peer(agentID)
	if !ok || got.Key != agentNode.Self().Key {
		t.Fatalf("proxy's view of the agent: %+v %v", got, ok)
	}
	// (The coordinator may name the proxy's peer with a per-connection
	// UUID, as coderd does, so look it up by key.)
	deadline := time.Now().Add(10 * time.Second)
	for !agentNode.hasReadyPeer(proxyNode.Self().Key) {
		if time.Now().After(deadline) {
			t.Fatalf("agent never accepted the proxy as a ready peer")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The apps are served on the node's listeners.
	resp, _ := get(t, newReq(t, http.MethodGet, "http://"+agentNode.waitAddr(t, 8080)+"/"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("app on node: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunTailnet: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunTailnet did not return")
	}
}

func TestRunTailnetRefusesWrongAddress(t *testing.T) {
	agentID := uuid.New()
	err := RunTailnet(context.Background(), TailnetOptions{
		PrimaryURL: &url.URL{Scheme: "http", Host: "127.0.0.1:1"},
		AgentToken: "x",
		Node:       newRecordingNode(netip.MustParseAddr("fd7a:115c:a1e0::1")),
		Agent:      Options{AgentID: agentID, Logger: quietLogger()},
	})
	if !errors.Is(err, ErrWrongAddress) {
		t.Fatalf("err = %v, want ErrWrongAddress", err)
	}
}
