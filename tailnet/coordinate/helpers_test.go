package coordinate_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
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

func testLogger() *slog.Logger {
	if os.Getenv("WSEDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeNode records what coordination asks of the local tailnet node.
type fakeNode struct {
	mu      sync.Mutex
	self    tailnet.NodeInfo
	cb      func(tailnet.NodeInfo)
	peers   map[uuid.UUID]tailnet.NodeInfo
	ready   map[uuid.UUID]bool
	upserts map[uuid.UUID]int
	removed map[uuid.UUID]int
	derps   []*tailcfg.DERPMap
}

func newFakeNode(addr netip.Addr) *fakeNode {
	return &fakeNode{
		self: tailnet.NodeInfo{
			ID: int64(time.Now().UnixNano() % 1e9), AsOf: time.Now().UTC().Truncate(time.Millisecond),
			Key: key.NewNode().Public(), DiscoKey: key.NewDisco().Public(), PreferredDERP: 999,
			Addresses:  []netip.Prefix{netip.PrefixFrom(addr, 128)},
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 128)},
			Endpoints:  []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:41641")},
		},
		peers: map[uuid.UUID]tailnet.NodeInfo{}, ready: map[uuid.UUID]bool{},
		upserts: map[uuid.UUID]int{}, removed: map[uuid.UUID]int{},
	}
}

func (f *fakeNode) Self() tailnet.NodeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.self
}

func (f *fakeNode) OnSelfChange(cb func(tailnet.NodeInfo)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cb = cb
}

func (f *fakeNode) UpsertPeer(id uuid.UUID, ni tailnet.NodeInfo) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers[id] = ni
	f.upserts[id]++
	return nil
}

func (f *fakeNode) RemovePeer(id uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.peers, id)
	delete(f.ready, id)
	f.removed[id]++
}

func (f *fakeNode) MarkPeerReady(id uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready[id] = true
}

func (f *fakeNode) SetDERPMap(m *tailcfg.DERPMap) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.derps = append(f.derps, m)
}

func (f *fakeNode) setEndpoint(ap netip.AddrPort) {
	f.mu.Lock()
	f.self.Endpoints = []netip.AddrPort{ap}
	ni, cb := f.self, f.cb
	f.mu.Unlock()
	cb(ni)
}

// peerWithKey returns the ID of the installed peer with key k.
func (f *fakeNode) peerWithKey(k key.NodePublic) (uuid.UUID, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, ni := range f.peers {
		if ni.Key == k {
			return id, true
		}
	}
	return uuid.Nil, false
}

func (f *fakeNode) has(id uuid.UUID) (tailnet.NodeInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ni, ok := f.peers[id]
	return ni, ok
}

func (f *fakeNode) isReady(id uuid.UUID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready[id]
}

func (f *fakeNode) counts(id uuid.UUID) (upserts, removed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.upserts[id], f.removed[id]
}

func (f *fakeNode) lastDERP() *tailcfg.DERPMap {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.derps) == 0 {
		return nil
	}
	return f.derps[len(f.derps)-1]
}

// agentIP is the agent's tailnet address (docs/protocol.md#agent-address).
func agentIP(id uuid.UUID) netip.Addr {
	b := [16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0}
	copy(b[6:], id[6:])
	return netip.AddrFrom16(b)
}

// trackingListener remembers accepted connections so a test can cut them.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) cutAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
}

// primary is a loopback stand-in for coderd's two coordination endpoints,
// authenticating callers and handing them to devcoord.
type primary struct {
	coord      *devcoord.Coordinator
	srv        *httptest.Server
	lis        *trackingListener
	url        *url.URL
	proxyToken string
	mu         sync.Mutex
	agents     map[string]uuid.UUID
}

func newPrimary(t testing.TB, opts devcoord.Options) *primary {
	t.Helper()
	opts.Logger = testLogger()
	p := &primary{
		coord:      devcoord.New(opts),
		proxyToken: uuid.NewString() + ":" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		agents:     map[string]uuid.UUID{},
	}
	proxyID := uuid.New()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/workspaceproxies/me/coordinate", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(coordinate.ProxyTokenHeader) != p.proxyToken {
			writeError(w, http.StatusUnauthorized, "Invalid external proxy token", "Invalid proxy token secret.")
			return
		}
		p.coord.ServeProxy(w, r, proxyID)
	})
	mux.HandleFunc("GET /api/v2/workspaceagents/me/rpc", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		id, ok := p.agents[r.Header.Get(coordinate.SessionTokenHeader)]
		p.mu.Unlock()
		if !ok {
			writeError(w, http.StatusUnauthorized, "Workspace agent not authorized.", "")
			return
		}
		p.coord.ServeAgent(w, r, id)
	})
	p.srv = httptest.NewUnstartedServer(mux)
	p.lis = &trackingListener{Listener: p.srv.Listener}
	p.srv.Listener = p.lis
	p.srv.Start()
	p.url, _ = url.Parse(p.srv.URL)
	t.Cleanup(p.srv.Close)
	t.Cleanup(func() { _ = p.coord.Close() })
	return p
}

func writeError(w http.ResponseWriter, status int, msg, detail string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg, "detail": detail})
}

func (p *primary) addAgent(id uuid.UUID) string {
	tok := "agent-token-" + id.String()
	p.mu.Lock()
	p.agents[tok] = id
	p.mu.Unlock()
	return tok
}

// fakeClock is a manual Clock.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	ch      chan time.Time
	f       func()
	stopped bool
	fired   bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration, f func()) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) NewTimer(d time.Duration) coordinate.Timer { return c.add(d, nil) }

func (c *fakeClock) AfterFunc(d time.Duration, f func()) coordinate.Timer { return c.add(d, f) }

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due, keep []*fakeTimer
	for _, t := range c.timers {
		switch {
		case t.stopped || t.fired:
		case !t.at.After(c.now):
			t.fired = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	now := c.now
	c.mu.Unlock()
	for _, t := range due {
		if t.f != nil {
			go t.f()
		} else {
			t.ch <- now
		}
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
