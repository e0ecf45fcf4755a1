package tsnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/wsedge/wsedge/tailnet"
)

// echoApp answers GET /hello with a fixed body and echoes websocket messages.
func echoApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Host", r.Host)
		fmt.Fprintf(w, "hello %s from %s", r.URL.Query().Get("name"), r.RemoteAddr)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	})
	return mux
}

// twoNodes starts a proxy-like node and an agent node at the agent's
// address, introduced to each other by hand, with the agent serving echoApp
// on port 8080.
func twoNodes(t *testing.T, opts Options) (proxy, agent *Node, agentID uuid.UUID) {
	t.Helper()
	d := newTestDERP(t)
	agentID = uuid.New()
	proxyID := uuid.New()
	opts.DERPMap = d.derpMap()
	opts.ExtraRootCAs = d.roots
	proxy = newTestNode(t, opts)
	aopts := opts
	aopts.Address = tailnet.AgentAddr(agentID)
	agent = newTestNode(t, aopts)
	pair(t, proxy, proxyID, agent, agentID)
	serveHTTP(t, agent, 8080, echoApp())
	return proxy, agent, agentID
}

func checkHTTPAndWebsocket(t *testing.T, proxy, agent *Node, agentID uuid.UUID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := httpClientVia(func(ctx context.Context) (net.Conn, error) { return proxy.Dial(ctx, agentID, 8080) })
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://app.internal/hello?name=alice", nil)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET through the tailnet: %v", err)
	}
	body := readAll(t, res.Body)
	res.Body.Close()
	want := fmt.Sprintf("hello alice from %s", net.JoinHostPort(proxy.Address().String(), ""))
	if res.StatusCode != http.StatusOK || len(body) < len(want) || body[:len(want)] != want {
		t.Fatalf("GET = %d %q, want 200 starting %q (the agent sees the proxy's tailnet address)", res.StatusCode, body, want)
	}
	if got := res.Header.Get("X-Seen-Host"); got != "app.internal" {
		t.Fatalf("Host seen by the app = %q", got)
	}

	ws, _, err := websocket.Dial(ctx, "ws://app.internal/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("websocket dial through the tailnet: %v", err)
	}
	defer ws.CloseNow()
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	ws.SetReadLimit(1 << 20)
	for _, msg := range [][]byte{[]byte("ping"), big} {
		if err := ws.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		typ, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageBinary || string(got) != "echo:"+string(msg) {
			t.Fatalf("echo of %d bytes: got %d bytes (type %v)", len(msg), len(got), typ)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

func TestDialOverDERPOnly(t *testing.T) {
	proxy, agent, agentID := twoNodes(t, Options{DERPOnly: true})
	if eps := proxy.Self().Endpoints; len(eps) != 0 {
		t.Fatalf("DERP-only node advertises endpoints %v", eps)
	}
	checkHTTPAndWebsocket(t, proxy, agent, agentID)
	st, ok := proxy.PeerStatus(agentID)
	if !ok || st.Direct.IsValid() || st.LastHandshake.IsZero() {
		t.Fatalf("peer status %+v ok=%v, want a handshake and no direct path", st, ok)
	}
}

func TestDialOverDirectUDP(t *testing.T) {
	proxy, agent, agentID := twoNodes(t, Options{})
	self := waitEndpoints(t, agent)
	for _, ep := range self.Endpoints {
		if !ep.Addr().IsLoopback() {
			t.Fatalf("loopback-only node advertises %v", ep)
		}
	}
	checkHTTPAndWebsocket(t, proxy, agent, agentID)
	// magicsock upgrades to the direct path once disco pings succeed.
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, _ := proxy.PeerStatus(agentID)
		if st.Direct.IsValid() {
			if !st.Direct.Addr().IsLoopback() {
				t.Fatalf("direct path to %v, want loopback", st.Direct)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no direct UDP path: %+v", st)
		}
		// Traffic drives path discovery.
		c, err := proxy.Dial(context.Background(), agentID, 8080)
		if err == nil {
			c.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkHTTPAndWebsocket(t, proxy, agent, agentID)
}

func waitEndpoints(t *testing.T, n *Node) tailnet.NodeInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := n.Self()
		if len(s.Endpoints) > 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never advertised an endpoint")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDialWaitsForReadyPeer(t *testing.T) {
	d := newTestDERP(t)
	opts := Options{DERPMap: d.derpMap(), ExtraRootCAs: d.roots}
	proxy := newTestNode(t, opts)
	agentID := uuid.New()

	// Unknown peer: Dial waits until ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := proxy.Dial(ctx, agentID, 8080)
	if !errors.Is(err, ErrPeerNotReady) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial to unknown agent = %v, want ErrPeerNotReady wrapping the deadline", err)
	}

	// Known but not ready: Dial blocks; MarkPeerReady releases it and the
	// first handshake succeeds at once (no 5 s retry).
	aopts := opts
	aopts.Address = tailnet.AgentAddr(agentID)
	agent := newTestNode(t, aopts)
	serveHTTP(t, agent, 8080, echoApp())
	proxyID := uuid.New()
	if err := proxy.UpsertPeer(agentID, waitSelf(t, agent)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   net.Conn
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := proxy.Dial(ctx, agentID, 8080)
		done <- result{c, err, time.Now()}
	}()
	select {
	case r := <-done:
		t.Fatalf("Dial returned before the peer was ready: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := agent.UpsertPeer(proxyID, waitSelf(t, proxy)); err != nil {
		t.Fatal(err)
	}
	agent.MarkPeerReady(proxyID)
	readyAt := time.Now()
	proxy.MarkPeerReady(agentID)
	r := <-done
	if r.err != nil {
		t.Fatalf("Dial after ready: %v", r.err)
	}
	r.c.Close()
	if took := r.at.Sub(readyAt); took > 4*time.Second {
		t.Fatalf("first dial took %v after ready: paid a handshake retry", took)
	}
}

func TestListenRefusesUnservedPorts(t *testing.T) {
	proxy, _, agentID := twoNodes(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Something listens on the host's loopback at port P. Upstream netstack
	// forwards flows it is not told to intercept to 127.0.0.1:<port>; the
	// agent's port P must be reset instead.
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := host.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	port := uint16(host.Addr().(*net.TCPAddr).Port)
	if c, err := proxy.Dial(ctx, agentID, port); err == nil {
		c.Close()
		t.Fatalf("dial to unserved tailnet port %d succeeded", port)
	}
	select {
	case <-accepted:
		t.Fatal("a tailnet flow reached the host's loopback listener")
	case <-time.After(200 * time.Millisecond):
	}
	c, err := proxy.Dial(ctx, agentID, 8080)
	if err != nil {
		t.Fatalf("dial to the served port: %v", err)
	}
	c.Close()
}

func TestOptionsValidation(t *testing.T) {
	_, err := New(Options{Address: netip.MustParseAddr("10.0.0.1"), Logger: testLogger()})
	if !errors.Is(err, ErrBadAddress) {
		t.Fatalf("New with 10.0.0.1 = %v, want ErrBadAddress", err)
	}
	if !websocketDERPCompiled {
		if _, err := New(Options{ForceWebsocketDERP: true, Logger: testLogger()}); !errors.Is(err, ErrWebsocketDERPUnavailable) {
			t.Fatalf("New(ForceWebsocketDERP) without the tag = %v", err)
		}
	}
	n := newTestNode(t, Options{})
	if got := n.Address(); !tailnet.ServicePrefix.Contains(got) || got == tailnet.ServicePrefix.Addr() {
		t.Fatalf("random address %v", got)
	}
	if _, err := New(Options{DERPOnly: true, Logger: testLogger()}); !errors.Is(err, ErrKnobConflict) {
		t.Fatalf("DERP-only node beside a normal one = %v, want ErrKnobConflict", err)
	}
	if err := n.UpsertPeer(uuid.New(), tailnet.NodeInfo{}); !errors.Is(err, ErrInvalidPeer) {
		t.Fatalf("UpsertPeer(zero) = %v", err)
	}
}

func TestPlainHTTPDERP(t *testing.T) {
	// A DERP server without TLS, as a dev primary on http:// serves it.
	d := newTestDERP(t)
	plain := httptest.NewServer(d.srv.Config.Handler)
	t.Cleanup(plain.Close)
	m := d.derpMap()
	u, _ := url.Parse(plain.URL)
	m.Regions[1].Nodes[0].DERPPort, _ = strconv.Atoi(u.Port())

	agentID, proxyID := uuid.New(), uuid.New()
	proxy := newTestNode(t, Options{DERPMap: m, DERPOnly: true, PlainHTTPDERP: true})
	agent := newTestNode(t, Options{DERPMap: m, DERPOnly: true, PlainHTTPDERP: true, Address: tailnet.AgentAddr(agentID)})
	pair(t, proxy, proxyID, agent, agentID)
	serveHTTP(t, agent, 8080, echoApp())
	checkHTTPAndWebsocket(t, proxy, agent, agentID)
}
