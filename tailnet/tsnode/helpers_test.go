package tsnode

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/wsedge/wsedge/tailnet"
	"tailscale.com/derp/derpserver"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// testLogger is quiet unless TSNODE_TEST_LOG=debug.
func testLogger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("TSNODE_TEST_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// testDERP is a DERP server (plain and websocket) on an httptest TLS server
// on 127.0.0.1. Upstream's DERP client always speaks TLS (unless a
// process-wide debug knob says otherwise), so the test trusts httptest's
// certificate through Options.ExtraRootCAs, the supported way.
type testDERP struct {
	srv        *httptest.Server
	derp       *derpserver.Server
	roots      *x509.CertPool
	websockets chan struct{} // one value per websocket DERP connection
	stunPort   int
}

func newTestDERP(t testing.TB) *testDERP {
	t.Helper()
	d := &testDERP{derp: derpserver.New(key.NewNode(), func(string, ...any) {}), websockets: make(chan struct{}, 1000), stunPort: serveSTUN(t)}
	h := derpserver.AddWebSocketSupport(d.derp, derpserver.Handler(d.derp))
	mux := http.NewServeMux()
	mux.HandleFunc("/derp", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			select {
			case d.websockets <- struct{}{}:
			default:
			}
		}
		h.ServeHTTP(w, r)
	})
	d.srv = httptest.NewUnstartedServer(mux)
	d.srv.EnableHTTP2 = false
	d.srv.StartTLS()
	d.roots = x509.NewCertPool()
	d.roots.AddCert(d.srv.Certificate())
	t.Cleanup(func() {
		d.srv.CloseClientConnections()
		d.srv.Close()
		_ = d.derp.Close()
	})
	return d
}

// region is a one-node DERP region served by d.
func (d *testDERP) region(id int) *tailcfg.DERPRegion {
	u, _ := url.Parse(d.srv.URL)
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
			STUNPort: d.stunPort,
		}},
	}
}

func (d *testDERP) derpMap() *tailcfg.DERPMap {
	return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: d.region(1)}}
}

func newTestNode(t testing.TB, opts Options) *Node {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	opts.LoopbackOnly = true
	n, err := New(opts)
	if err != nil {
		t.Fatalf("tsnode.New: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// waitSelf waits until the node advertises a home DERP region.
func waitSelf(t testing.TB, n *Node) tailnet.NodeInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := n.Self()
		if s.PreferredDERP != 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never got a home DERP region")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFullSelf waits for the home region and, unless DERP-only, an endpoint.
func waitFullSelf(t testing.TB, n *Node) tailnet.NodeInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := n.Self()
		if s.PreferredDERP != 0 && (n.opts.DERPOnly || len(s.Endpoints) > 0) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never got a home DERP region and endpoints: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pair tells a about b (as agent bID) and b about a (as aID), both ready.
func pair(t testing.TB, a *Node, aID uuid.UUID, b *Node, bID uuid.UUID) {
	t.Helper()
	if err := a.UpsertPeer(bID, waitFullSelf(t, b)); err != nil {
		t.Fatal(err)
	}
	if err := b.UpsertPeer(aID, waitFullSelf(t, a)); err != nil {
		t.Fatal(err)
	}
	a.MarkPeerReady(bID)
	b.MarkPeerReady(aID)
}

// serveHTTP serves h on n's port until the test ends.
func serveHTTP(t testing.TB, n *Node, port uint16, h http.Handler) {
	t.Helper()
	ln, err := n.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
}

// httpClientVia returns a client whose every connection is dialled with
// dial (to the agent, whatever the URL's host).
func httpClientVia(dial func(ctx context.Context) (net.Conn, error)) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			DisableKeepAlives: true,
		},
		Timeout: 20 * time.Second,
	}
}

func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dialServed dials port on the agent of a fresh pair of nodes, whose
// listener hands the first connection it accepts to serve (closed after
// serve returns); the context bounds the test's waits.
func dialServed(t *testing.T, port uint16, serve func(net.Conn)) (net.Conn, context.Context) {
	t.Helper()
	proxy, agent, agentID := twoNodes(t, Options{})
	ln, err := agent.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c, err := proxy.Dial(ctx, agentID, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, ctx
}
