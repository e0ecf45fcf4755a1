package derp

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	tsderp "tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// replica is a derp.Server on an httptest TLS server on 127.0.0.1.
type replica struct {
	s   *Server
	srv *httptest.Server
}

func newReplica(t *testing.T, opts Options) *replica {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(func() {
		_ = s.Close()
		srv.CloseClientConnections()
		srv.Close()
	})
	return &replica{s: s, srv: srv}
}

func rootsOf(rs ...*replica) *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range rs {
		p.AddCert(r.srv.Certificate())
	}
	return p
}

// client is an upstream DERP client connected to r over "Upgrade: DERP".
func client(t *testing.T, r *replica, roots *x509.CertPool) (*derphttp.Client, key.NodePublic) {
	t.Helper()
	k := key.NewNode()
	c, err := derphttp.NewClient(k, r.srv.URL+"/derp", func(string, ...any) {}, netmon.NewStatic())
	if err != nil {
		t.Fatal(err)
	}
	c.TLSConfig = &tls.Config{RootCAs: roots}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("DERP connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, k.Public()
}

// receiver delivers the packets a DERP client receives.
type receiver interface {
	Recv() (tsderp.ReceivedMessage, error)
}

func packets(r receiver) <-chan tsderp.ReceivedPacket {
	ch := make(chan tsderp.ReceivedPacket, 16)
	go func() {
		defer close(ch)
		for {
			m, err := r.Recv()
			if err != nil {
				return
			}
			if p, ok := m.(tsderp.ReceivedPacket); ok {
				p.Data = append([]byte(nil), p.Data...)
				ch <- p
			}
		}
	}()
	return ch
}

// deliver sends data from c to dst until it arrives on got (a mesh learns
// about remote clients asynchronously) or the deadline passes.
func deliver(t *testing.T, send func(key.NodePublic, []byte) error, dst key.NodePublic, from key.NodePublic, data string, got <-chan tsderp.ReceivedPacket) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := send(dst, []byte(data)); err != nil {
			t.Fatalf("send: %v", err)
		}
		select {
		case p := <-got:
			if p.Source != from || string(p.Data) != data {
				t.Fatalf("received %q from %v, want %q from %v", p.Data, p.Source, data, from)
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatalf("packet %q never delivered", data)
		}
	}
}

func TestRoutes(t *testing.T) {
	r := newReplica(t, Options{})
	hc := r.srv.Client()
	for _, tc := range []struct {
		method, path string
		upgrade      string
		want         int
		wantBody     string
	}{
		{"GET", "/derp/latency-check", "", http.StatusOK, ""},
		{"HEAD", "/derp/latency-check", "", http.StatusOK, ""},
		{"POST", "/derp/latency-check", "", http.StatusMethodNotAllowed, "method not allowed\n"},
		{"GET", "/derp", "", http.StatusUpgradeRequired, "DERP requires connection upgrade\n"},
		{"GET", "/derp/probe", "", http.StatusNotFound, "404 page not found\n"},
		{"GET", "/other", "", http.StatusNotFound, "404 page not found\n"},
	} {
		req, _ := http.NewRequest(tc.method, r.srv.URL+tc.path, nil)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want || string(body) != tc.wantBody {
			t.Errorf("%s %s = %d %q, want %d %q", tc.method, tc.path, res.StatusCode, body, tc.want, tc.wantBody)
		}
	}
}

func TestPlainAndWebsocketDERP(t *testing.T) {
	r := newReplica(t, Options{})
	roots := rootsOf(r)
	plain, plainKey := client(t, r, roots)

	// A websocket DERP client, as browsers and Coder clients with
	// derp_force_websockets connect: subprotocol "derp", binary messages
	// carrying DERP frames.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	ws, res, err := websocket.Dial(ctx, r.srv.URL+"/derp", &websocket.DialOptions{
		HTTPClient:   hc,
		Subprotocols: []string{"derp"},
		HTTPHeader:   http.Header{"Origin": {"https://evil.example"}},
	})
	if err != nil {
		t.Fatalf("websocket DERP dial: %v", err)
	}
	defer ws.CloseNow()
	if res.StatusCode != http.StatusSwitchingProtocols || ws.Subprotocol() != "derp" {
		t.Fatalf("websocket upgrade = %d, subprotocol %q", res.StatusCode, ws.Subprotocol())
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	wsKey := key.NewNode()
	wsc, err := tsderp.NewClient(wsKey, nc, bufio.NewReadWriter(bufio.NewReader(nc), bufio.NewWriter(nc)), func(string, ...any) {})
	if err != nil {
		t.Fatalf("DERP handshake over websocket: %v", err)
	}

	fromPlain, fromWS := packets(wsc), packets(plain)
	deliver(t, plain.Send, wsKey.Public(), plainKey, "plain to websocket", fromPlain)
	deliver(t, wsc.Send, plainKey, wsKey.Public(), "websocket to plain", fromWS)
}

func TestWebsocketWithoutDERPSubprotocolIsNotDERP(t *testing.T) {
	r := newReplica(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootsOf(r)}}}
	ws, _, err := websocket.Dial(ctx, r.srv.URL+"/derp", &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"chat"}})
	if err == nil {
		ws.CloseNow()
		t.Fatal("websocket without the derp subprotocol was accepted as a websocket")
	}
}

func TestMeshDeliversBetweenReplicas(t *testing.T) {
	const coderKey = "abcdefghijklmnopqrstuvwxyz012345"
	a := newReplica(t, Options{MeshKey: coderKey})
	b := newReplica(t, Options{MeshKey: coderKey})
	roots := rootsOf(a, b)
	// Siblings are dialled by address but verified by the access URL's
	// hostname (httptest's certificate is also valid for example.com).
	meshTLS := &tls.Config{RootCAs: roots, ServerName: "example.com"}
	a.s.opts.MeshTLSConfig = meshTLS
	b.s.opts.MeshTLSConfig = meshTLS
	if err := a.s.SetMeshPeers([]string{b.srv.URL}); err != nil {
		t.Fatal(err)
	}
	if err := b.s.SetMeshPeers([]string{a.srv.URL}); err != nil {
		t.Fatal(err)
	}

	ca, ka := client(t, a, roots)
	cb, kb := client(t, b, roots)
	gotB, gotA := packets(cb), packets(ca)
	deliver(t, ca.Send, kb, ka, "homed on A to homed on B", gotB)
	deliver(t, cb.Send, ka, kb, "homed on B to homed on A", gotA)

	// A drops B from its mesh: A no longer knows B's clients.
	if err := a.s.SetMeshPeers(nil); err != nil {
		t.Fatal(err)
	}
	if got := a.s.MeshPeers(); len(got) != 0 {
		t.Fatalf("mesh peers after removal: %v", got)
	}
	for i := 0; i < 5; i++ {
		if err := ca.Send(kb, []byte("after removal")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case p := <-gotB:
		t.Fatalf("packet %q delivered through a removed mesh peer", p.Data)
	case <-time.After(500 * time.Millisecond):
	}
	// B still meshes with A.
	deliver(t, cb.Send, ka, kb, "B still reaches A", gotA)
}

func TestMeshNeedsTheSameKey(t *testing.T) {
	a := newReplica(t, Options{MeshKey: "key-one-aaaaaaaaaaaaaaaaaaaaaaaa"})
	b := newReplica(t, Options{MeshKey: "key-two-bbbbbbbbbbbbbbbbbbbbbbbb"})
	roots := rootsOf(a, b)
	a.s.opts.MeshTLSConfig = &tls.Config{RootCAs: roots}
	if err := a.s.SetMeshPeers([]string{b.srv.URL}); err != nil {
		t.Fatal(err)
	}
	ca, _ := client(t, a, roots)
	cb, kb := client(t, b, roots)
	gotB := packets(cb)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		_ = ca.Send(kb, []byte("x"))
		select {
		case p := <-gotB:
			t.Fatalf("packet %q crossed a mesh with a different key", p.Data)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestMeshKeyFromCoder(t *testing.T) {
	k := MeshKeyFromCoder("abcdefghijklmnopqrstuvwxyz012345")
	if len(k) != 64 || strings.Trim(k, "0123456789abcdef") != "" {
		t.Fatalf("derived key %q is not 64 hex digits", k)
	}
	if k != MeshKeyFromCoder("abcdefghijklmnopqrstuvwxyz012345") || k == MeshKeyFromCoder("abcdefghijklmnopqrstuvwxyz012346") {
		t.Fatal("derivation is not a deterministic function of the key")
	}
	// hex(SHA-256("abc")), so other implementations can check theirs.
	if got := MeshKeyFromCoder("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("MeshKeyFromCoder(abc) = %s", got)
	}
}

func TestSetMeshPeersErrors(t *testing.T) {
	noKey := newReplica(t, Options{})
	if err := noKey.s.SetMeshPeers([]string{"https://127.0.0.1:1"}); !errors.Is(err, ErrNoMeshKey) {
		t.Fatalf("mesh without a key = %v", err)
	}
	if err := noKey.s.SetMeshPeers(nil); err != nil {
		t.Fatalf("empty mesh without a key = %v", err)
	}
	r := newReplica(t, Options{MeshKey: "k"})
	err := r.s.SetMeshPeers([]string{"ftp://x", "://bad", "https://127.0.0.1:1"})
	if !errors.Is(err, ErrBadRelayAddress) {
		t.Fatalf("bad addresses = %v", err)
	}
	if got := r.s.MeshPeers(); len(got) != 1 || got[0] != "https://127.0.0.1:1" {
		t.Fatalf("the good address is not meshed: %v", got)
	}
}

func TestCheckPeers(t *testing.T) {
	// A sibling that hangs up on the first probe and answers the second.
	var probes atomic.Int64
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != LatencyCheckPath {
			http.NotFound(w, r)
			return
		}
		if probes.Add(1) == 1 {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer flaky.Close()
	// A sibling that is gone.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()

	var (
		mu     sync.Mutex
		delays []time.Duration
	)
	r := newReplica(t, Options{MeshKey: "k", After: func(d time.Duration) <-chan time.Time {
		mu.Lock()
		defer mu.Unlock()
		delays = append(delays, d)
		ch := make(chan time.Time, 1)
		ch <- time.Now()
		return ch
	}})
	if got := r.s.CheckPeers(context.Background()); got != "" {
		t.Fatalf("no siblings: %q", got)
	}
	if err := r.s.SetMeshPeers([]string{flaky.URL}); err != nil {
		t.Fatal(err)
	}
	if got := r.s.CheckPeers(context.Background()); got != "" {
		t.Fatalf("sibling answering its second probe: %q", got)
	}
	if probes.Load() != 2 || len(delays) != 1 || delays[0] != time.Second {
		t.Fatalf("probes %d, delays %v; want 2 probes 1 s apart", probes.Load(), delays)
	}

	if err := r.s.SetSiblings([]Sibling{{Hostname: "flaky-0", RelayAddress: flaky.URL}, {Hostname: "dead-1", RelayAddress: dead}}); err != nil {
		t.Fatal(err)
	}
	got := r.s.CheckPeers(context.Background())
	want := "Failed to dial peers: relay dead-1 (" + dead + "): "
	if !strings.HasPrefix(got, want) || !strings.Contains(got, "connection refused") || strings.Contains(got, flaky.URL) {
		t.Fatalf("replica error = %q, want it to start %q and name only the dead sibling", got, want)
	}
}
