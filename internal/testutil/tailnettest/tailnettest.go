// Package tailnettest holds loopback fixtures for tests and benchmarks of the
// tailnet: a DERP server on an httptest TLS server, a dev primary serving
// only tailnet coordination (devcoord), a dev agent on a real tsnode and a
// proxy-side tsnode driven by tailnet/coordinate. Everything listens on
// 127.0.0.1 only.
package tailnettest

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/derp/derpserver"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"github.com/wsedge/wsedge/derp"
	devagent "github.com/wsedge/wsedge/dev/agent"
	devcoord "github.com/wsedge/wsedge/dev/coord"
	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/coordinate"
	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// Logger is quiet (warnings and up) unless TSNODE_TEST_LOG=debug.
func Logger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("TSNODE_TEST_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// DERP is an upstream DERP server (plain Upgrade: DERP and websocket) on an
// httptest TLS server on 127.0.0.1. Upstream's DERP client always speaks
// TLS, so nodes trust the server's certificate through
// tsnode.Options.ExtraRootCAs (Roots).
type DERP struct {
	Server *httptest.Server
	DERP   *derpserver.Server
	Roots  *x509.CertPool
	// Websockets counts websocket DERP connections accepted.
	Websockets atomic.Int64
	// STUNPort is a STUN server on 127.0.0.1 listed in Region's node.
	STUNPort int
}

// NewDERP starts a DERP server, stopped at the end of the test. handler, if
// not nil, replaces the default /derp handler (derp.New's, for instance).
func NewDERP(t testing.TB, handler http.Handler) *DERP {
	t.Helper()
	d := &DERP{DERP: derpserver.New(key.NewNode(), func(string, ...any) {}), STUNPort: ServeSTUN(t)}
	h := handler
	if h == nil {
		h = derpserver.AddWebSocketSupport(d.DERP, derpserver.Handler(d.DERP))
	}
	d.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			d.Websockets.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	d.Server.EnableHTTP2 = false
	d.Server.StartTLS()
	d.Roots = x509.NewCertPool()
	d.Roots.AddCert(d.Server.Certificate())
	t.Cleanup(func() {
		d.Server.CloseClientConnections()
		d.Server.Close()
		_ = d.DERP.Close()
	})
	return d
}

// Region is a one-node DERP region served by d with its STUN server, on
// IPv4 loopback.
func (d *DERP) Region(id int) *tailcfg.DERPRegion {
	u, _ := url.Parse(d.Server.URL)
	port, _ := strconv.Atoi(u.Port())
	return &tailcfg.DERPRegion{
		RegionID:   id,
		RegionCode: "test" + strconv.Itoa(id),
		RegionName: "Test " + strconv.Itoa(id),
		Nodes: []*tailcfg.DERPNode{{
			Name:     strconv.Itoa(id) + "a",
			RegionID: id,
			HostName: "127.0.0.1",
			IPv4:     "127.0.0.1",
			IPv6:     "none",
			DERPPort: port,
			STUNPort: d.STUNPort,
		}},
	}
}

// Map is a DERP map with d as region 1.
func (d *DERP) Map() *tailcfg.DERPMap {
	return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: d.Region(1)}}
}

// ServeSTUN answers STUN binding requests on 127.0.0.1 until the end of the
// test and returns the port. Without any STUN server in the DERP map,
// upstream netcheck concludes that IPv4 cannot send and magicsock rebinds,
// dropping its DERP connections, at every periodic endpoint update.
func ServeSTUN(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = derp.ServeSTUN(pc)
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// Tokens the Primary accepts.
const (
	ProxyToken = "proxy-id:proxy-secret"
	AgentToken = "agent-token"
)

// Primary serves the proxy and agent coordination endpoints with a devcoord
// coordinator that Restart replaces, as if the primary restarted.
type Primary struct {
	Server  *httptest.Server
	URL     *url.URL
	ProxyID uuid.UUID

	log     *slog.Logger
	derpMap *tailcfg.DERPMap
	mu      sync.Mutex
	coord   *devcoord.Coordinator
	agents  map[string]uuid.UUID // agent token → agent ID
}

// NewPrimary starts a coordination-only primary streaming derpMap.
func NewPrimary(t testing.TB, derpMap *tailcfg.DERPMap) *Primary {
	t.Helper()
	p := &Primary{ProxyID: uuid.New(), log: Logger(), derpMap: derpMap, agents: map[string]uuid.UUID{}}
	p.coord = p.newCoord()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/workspaceagents/me/rpc", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		id, ok := p.agents[r.Header.Get(coordinate.SessionTokenHeader)]
		c := p.coord
		p.mu.Unlock()
		if !ok {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		c.ServeAgent(w, r, id)
	})
	mux.HandleFunc("GET /api/v2/workspaceproxies/me/coordinate", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(coordinate.ProxyTokenHeader) != ProxyToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		p.mu.Lock()
		c := p.coord
		p.mu.Unlock()
		c.ServeProxy(w, r, p.ProxyID)
	})
	p.Server = httptest.NewServer(mux)
	p.URL, _ = url.Parse(p.Server.URL)
	t.Cleanup(func() {
		p.mu.Lock()
		c := p.coord
		p.mu.Unlock()
		_ = c.Close()
		p.Server.Close()
	})
	return p
}

func (p *Primary) newCoord() *devcoord.Coordinator {
	m := p.derpMap
	c := devcoord.New(devcoord.Options{Logger: p.log})
	c.SetDERPMap(m)
	return c
}

// Restart drops every coordination connection and continues with a fresh
// coordinator that knows nothing, like a restarted primary.
func (p *Primary) Restart() {
	p.mu.Lock()
	old := p.coord
	p.coord = p.newCoord()
	p.mu.Unlock()
	_ = old.Close()
}

// Coordinator returns the current coordinator.
func (p *Primary) Coordinator() *devcoord.Coordinator {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.coord
}

// Agent is a dev agent on a real tsnode, coordinating with a Primary.
type Agent struct {
	ID   uuid.UUID
	Node *tsnode.Node
	stop func()
}

// AgentApps are what StartAgent serves: the demo app on 8080, the websocket
// echo app on 8081.
var AgentApps = []devagent.AppSpec{{Port: 8080, Kind: devagent.KindHTTP}, {Port: 8081, Kind: devagent.KindWebsocket}}

// StartAgent runs a dev agent with ID id (uuid.Nil: a new one) on a tsnode
// made with opts; Stop (or the end of the test) stops it.
func (p *Primary) StartAgent(t testing.TB, id uuid.UUID, opts tsnode.Options) *Agent {
	t.Helper()
	if id == uuid.Nil {
		id = uuid.New()
	}
	if opts.Logger == nil {
		opts.Logger = Logger()
	}
	n, err := devagent.NewTSNode(id, opts)
	if err != nil {
		t.Fatalf("agent node: %v", err)
	}
	token := AgentToken + "-" + id.String()
	p.mu.Lock()
	p.agents[token] = id
	p.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- devagent.RunTailnet(ctx, devagent.TailnetOptions{
			PrimaryURL: p.URL,
			AgentToken: token,
			Node:       devagent.TSNode(n),
			Agent: devagent.Options{
				AgentID: id,
				Apps:    AgentApps,
				Logger:  opts.Logger,
				PTY:     devagent.PTYOptions{Shell: "/bin/sh"},
			},
		})
	}()
	var once sync.Once
	a := &Agent{ID: id, Node: n}
	a.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("agent %s: %v", id, err)
			}
			_ = n.Close()
		})
	}
	t.Cleanup(a.stop)
	return a
}

// Stop stops the agent and closes its node.
func (a *Agent) Stop() { a.stop() }

// Proxy is the proxy side: a tsnode driven by a coordinate.Client.
type Proxy struct {
	Node   *tsnode.Node
	Client *coordinate.Client
}

// StartProxy starts a proxy node with opts coordinating with p.
func (p *Primary) StartProxy(t testing.TB, opts tsnode.Options) *Proxy {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = Logger()
	}
	n, err := tsnode.New(opts)
	if err != nil {
		t.Fatalf("proxy node: %v", err)
	}
	cl, err := coordinate.New(context.Background(), coordinate.Options{
		URL:        p.URL,
		ProxyToken: ProxyToken,
		Node:       n,
		Logger:     opts.Logger,
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		_ = n.Close()
		t.Fatalf("coordinate: %v", err)
	}
	t.Cleanup(func() {
		_ = cl.Close()
		_ = n.Close()
	})
	return &Proxy{Node: n, Client: cl}
}

// Dial opens the tunnel (add_tunnel, wait for the agent's readiness) and
// dials port on the agent with tailnet.Dialer, as the dialer does. The tunnel
// reference is released when the connection is closed.
func (px *Proxy) Dial(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error) {
	return tailnet.Dialer{Tunnels: px.Client, Node: px.Node}.DialAgent(ctx, agentID, port)
}

// HTTPClient returns a client that reaches the agent's port whatever the
// URL's host, one connection per request (no keep-alive).
func (px *Proxy) HTTPClient(agentID uuid.UUID, port uint16) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return px.Dial(ctx, agentID, port)
			},
			DisableKeepAlives: true,
		},
		Timeout: 30 * time.Second,
	}
}
