package devcoord

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/tailnet"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

func newTestCoordinator(t *testing.T) *Coordinator {
	c := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func connect(t *testing.T, c *Coordinator, id uuid.UUID, a auth) *peer {
	t.Helper()
	p := &peer{id: id, auth: a, log: c.log, resps: make(chan *tailnetproto.CoordinateResponse, responseBuffer), sent: map[uuid.UUID]*tailnetproto.Node{}}
	if err := c.initPeer(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func agentNode(id uuid.UUID, derp int32) *tailnetproto.Node {
	return &tailnetproto.Node{PreferredDerp: derp, Addresses: []string{tailnet.AgentAddr(id).String() + "/128"}}
}

func send(t *testing.T, c *Coordinator, p *peer, req *tailnetproto.CoordinateRequest) {
	t.Helper()
	if err := c.handleRequest(p, req); err != nil {
		t.Fatalf("handleRequest: %v", err)
	}
}

// next returns the next queued response, failing if there is none.
func next(t *testing.T, p *peer) *tailnetproto.CoordinateResponse {
	t.Helper()
	select {
	case r, ok := <-p.resps:
		if !ok {
			t.Fatal("responses closed")
		}
		return r
	default:
		t.Fatal("no response queued")
		return nil
	}
}

func none(t *testing.T, p *peer) {
	t.Helper()
	select {
	case r, ok := <-p.resps:
		if ok {
			t.Fatalf("unexpected response %v", r)
		}
	default:
	}
}

func single(t *testing.T, r *tailnetproto.CoordinateResponse, id uuid.UUID, k tailnetproto.CoordinateResponse_PeerUpdate_Kind, reason string) *tailnetproto.CoordinateResponse_PeerUpdate {
	t.Helper()
	if len(r.PeerUpdates) != 1 {
		t.Fatalf("got %d peer updates, want 1: %v", len(r.PeerUpdates), r)
	}
	u := r.PeerUpdates[0]
	if got, _ := uuid.FromBytes(u.Id); got != id || u.Kind != k || u.Reason != reason {
		t.Fatalf("update = {%v %v %q}, want {%v %v %q}", got, u.Kind, u.Reason, id, k, reason)
	}
	return u
}

func TestTunnelRelaysNodesReadyAndDisconnect(t *testing.T) {
	c := newTestCoordinator(t)
	agentID, proxyID := uuid.New(), uuid.New()
	agent := connect(t, c, agentID, agentAuth{id: agentID})
	proxy := connect(t, c, proxyID, proxyAuth{})
	send(t, c, agent, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: agentNode(agentID, 1)}})
	send(t, c, proxy, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{PreferredDerp: 2}}})
	none(t, agent) // no tunnel yet: nobody hears about anybody
	none(t, proxy)

	send(t, c, proxy, &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: agentID[:]}})
	if u := single(t, next(t, proxy), agentID, kindNode, "add tunnel"); u.Node.PreferredDerp != 1 {
		t.Errorf("proxy got agent derp %d", u.Node.PreferredDerp)
	}
	if u := single(t, next(t, agent), proxyID, kindNode, "add tunnel"); u.Node.PreferredDerp != 2 {
		t.Errorf("agent got proxy derp %d", u.Node.PreferredDerp)
	}

	// The agent acknowledges; the proxy is told READY_FOR_HANDSHAKE.
	send(t, c, agent, &tailnetproto.CoordinateRequest{ReadyForHandshake: []*tailnetproto.CoordinateRequest_ReadyForHandshake{{Id: proxyID[:]}}})
	single(t, next(t, proxy), agentID, kindReady, "")

	// An unchanged node is not sent again; a changed one is.
	send(t, c, agent, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: agentNode(agentID, 1)}})
	none(t, proxy)
	send(t, c, agent, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: agentNode(agentID, 3)}})
	single(t, next(t, proxy), agentID, kindNode, "node update")

	// Graceful leave: DISCONNECTED to the agent, and the proxy is hung up on.
	send(t, c, proxy, &tailnetproto.CoordinateRequest{Disconnect: &tailnetproto.CoordinateRequest_Disconnect{}})
	single(t, next(t, agent), proxyID, kindDisconnected, "graceful disconnect")
	if _, ok := <-proxy.resps; ok {
		t.Error("proxy responses not closed after disconnect")
	}
	if peers, tunnels := c.Stats(); peers != 1 || tunnels != 0 {
		t.Errorf("stats = %d peers %d tunnels, want 1, 0", peers, tunnels)
	}
}

func TestLostAgentAndReturn(t *testing.T) {
	c := newTestCoordinator(t)
	agentID, proxyID := uuid.New(), uuid.New()
	agent := connect(t, c, agentID, agentAuth{id: agentID})
	proxy := connect(t, c, proxyID, proxyAuth{})
	send(t, c, proxy, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{PreferredDerp: 2}}})
	send(t, c, agent, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: agentNode(agentID, 1)}})
	send(t, c, proxy, &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: agentID[:]}})
	next(t, proxy)
	next(t, agent)

	c.lostPeer(agent)
	single(t, next(t, proxy), agentID, kindLost, "lost")
	// The tunnel belongs to the proxy and survives: a returning agent is sent
	// the proxy's node at once, and its own node reaches the proxy.
	agent2 := connect(t, c, agentID, agentAuth{id: agentID})
	single(t, next(t, agent2), proxyID, kindNode, "init")
	send(t, c, agent2, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: agentNode(agentID, 1)}})
	single(t, next(t, proxy), agentID, kindNode, "node update")
}

func TestReadyForHandshakeWithoutTunnelIsAnError(t *testing.T) {
	c := newTestCoordinator(t)
	agentID, stranger := uuid.New(), uuid.New()
	agent := connect(t, c, agentID, agentAuth{id: agentID})
	send(t, c, agent, &tailnetproto.CoordinateRequest{ReadyForHandshake: []*tailnetproto.CoordinateRequest_ReadyForHandshake{{Id: stranger[:]}}})
	r := next(t, agent)
	if want := `you do not share a tunnel with "` + stranger.String() + `"`; r.Error != want {
		t.Errorf("error = %q, want %q", r.Error, want)
	}
}

func TestRequestsRejected(t *testing.T) {
	agentID := uuid.New()
	for _, tc := range []struct {
		name string
		req  *tailnetproto.CoordinateRequest
		want string
	}{
		{"agent add_tunnel", &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: make([]byte, 16)}}, "agents cannot open tunnels"},
		{"foreign address", &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{Addresses: []string{"fd7a:115c:a1e0::1/128"}}}}, "invalid node address, got fd7a:115c:a1e0::1"},
		{"wide prefix", &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{Addresses: []string{"fd7a:115c:a1e0::/64"}}}}, "invalid address bits, expected 128, got 64"},
		{"no node", &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{}}, "update_self node is required"},
		{"nil ack", &tailnetproto.CoordinateRequest{ReadyForHandshake: []*tailnetproto.CoordinateRequest_ReadyForHandshake{nil}}, "ready_for_handshake entry is required"},
		{"short tunnel id", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCoordinator(t)
			p := connect(t, c, agentID, agentAuth{id: agentID})
			req, want := tc.req, tc.want
			if req == nil { // a proxy with a malformed tunnel id
				p = connect(t, c, uuid.New(), proxyAuth{})
				req, want = &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: []byte{1, 2}}}, "unable to convert bytes to UUID"
			}
			err := c.handleRequest(p, req)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want %q", err, want)
			}
		})
	}
	// The agent's own addresses (both prefixes) are fine.
	c := newTestCoordinator(t)
	p := connect(t, c, agentID, agentAuth{id: agentID})
	send(t, c, p, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{Addresses: []string{
		tailnet.AgentAddr(agentID).String() + "/128", tailnet.AgentAddrIn(tailnet.CoderPrefix, agentID).String() + "/128",
	}}}})
}

func TestCloseMarksPeersLost(t *testing.T) {
	c := newTestCoordinator(t)
	agentID, proxyID := uuid.New(), uuid.New()
	agent := connect(t, c, agentID, agentAuth{id: agentID})
	proxy := connect(t, c, proxyID, proxyAuth{})
	send(t, c, agent, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: agentNode(agentID, 1)}})
	send(t, c, proxy, &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{PreferredDerp: 2}}})
	send(t, c, proxy, &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: agentID[:]}})
	next(t, proxy)
	next(t, agent)
	_ = c.Close()
	var kinds []tailnetproto.CoordinateResponse_PeerUpdate_Kind
	for _, p := range []*peer{agent, proxy} {
		for r := range p.resps { // closed by Close
			for _, u := range r.PeerUpdates {
				kinds = append(kinds, u.Kind)
			}
		}
	}
	// Whichever goes first is reported LOST to the other (never
	// DISCONNECTED, which would tear down working sessions).
	if len(kinds) != 1 || kinds[0] != kindLost {
		t.Errorf("updates on close = %v, want one LOST", kinds)
	}
	if err := c.initPeer(&peer{id: uuid.New(), resps: make(chan *tailnetproto.CoordinateResponse, 1)}); err != errClosed {
		t.Errorf("initPeer after Close: %v", err)
	}
}

func TestVersionQuery(t *testing.T) {
	c := newTestCoordinator(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/proxy", func(w http.ResponseWriter, r *http.Request) { c.ServeProxy(w, r, uuid.New()) })
	mux.HandleFunc("/agent", func(w http.ResponseWriter, r *http.Request) { c.ServeAgent(w, r, uuid.New()) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tc := range []struct {
		path, query, detail string
	}{
		{"/proxy", "", "version 1.0 is no longer supported"},
		{"/proxy", "?version=1.0", "version 1.0 is no longer supported"},
		{"/proxy", "?version=3.0", "server is at version 2.5, behind requested major version 3.0"},
		{"/proxy", "?version=2.6", "server is at version 2.5, behind requested minor version 2.6"},
		{"/proxy", "?version=2", "invalid version string: 2"},
		{"/proxy", "?version=x.0", "invalid major version: x.0"},
		{"/proxy", "?version=2.x", "invalid minor version: 2.x"},
		{"/agent", "?version=1.9", "version 1.9 is no longer supported"},
	} {
		resp, err := http.Get(srv.URL + tc.path + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Errorf("%s%s: status %d, content type %q", tc.path, tc.query, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		want, _ := json.Marshal(coderhttp.Response{Message: "Unknown or unsupported API version", Validations: []coderhttp.ValidationError{{Field: "version", Detail: tc.detail}}})
		if strings.TrimSpace(string(body)) != string(want) {
			t.Errorf("%s%s: body %s, want %s", tc.path, tc.query, body, want)
		}
	}
	// A good version gets as far as the websocket upgrade (which a plain GET
	// fails), not a version error.
	for _, path := range []string{"/proxy?version=2.0", "/proxy?version=2.5", "/agent"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if strings.Contains(string(body), "Unknown or unsupported API version") {
			t.Errorf("%s: refused as a bad version: %s", path, body)
		}
	}
}

func TestAddrFromUUID(t *testing.T) {
	id := uuid.MustParse("123e4567-e89b-12d3-a456-426614174000")
	if got, want := tailnet.AgentAddr(id), netip.MustParseAddr("fd7a:115c:a1e0:12d3:a456:4266:1417:4000"); got != want {
		t.Errorf("agent IP = %v, want %v", got, want)
	}
}
