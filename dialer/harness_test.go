package dialer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tokens"
)

const (
	testAccessHost    = "proxy.example.com"
	testDashboardHost = "coder.example.com"
	testWildcard      = "*.apps.example.com"
)

var (
	testAgentID     = uuid.MustParse("123e4567-e89b-12d3-a456-426614174000")
	testUserID      = uuid.MustParse("0b1e4a2c-3b5d-4c6e-8f70-112233445566")
	testWorkspaceID = uuid.MustParse("aa1e4a2c-3b5d-4c6e-8f70-112233445566")
)

// loopAgents maps agent ports to loopback addresses.
type loopAgents struct {
	mu    sync.Mutex
	ports map[uint16]string
	// block makes dials hang until their context ends (an unreachable
	// agent).
	block bool
	dials []string
	// poller, when set, makes the dialed connections
	// tailnet.ReadinessConns, as the tailnet's are (watchAppReadiness).
	poller *readinessPoller
}

func (a *loopAgents) set(port uint16, addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ports == nil {
		a.ports = map[uint16]string{}
	}
	a.ports[port] = addr
}

func (a *loopAgents) DialAgent(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error) {
	a.mu.Lock()
	addr, ok := a.ports[port]
	block := a.block
	a.dials = append(a.dials, fmt.Sprintf("%s:%d", agentID, port))
	a.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if !ok {
		return nil, errors.New("connection refused")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || a.poller == nil {
		return c, err
	}
	tc := c.(*net.TCPConn)
	rc, err := tc.SyscallConn()
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return &pollReadyConn{TCPConn: tc, p: a.poller, rc: rc}, nil
}

// watchAppReadiness makes e's agent connections say when they are
// readable, as the tailnet's do: upgraded sessions then hold no
// goroutine while idle.
func (e *testEnv) watchAppReadiness(t testing.TB) *testEnv {
	t.Helper()
	p, err := newReadinessPoller()
	if err != nil {
		t.Skipf("no readiness poller: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e.agents.mu.Lock()
	e.agents.poller = p
	e.agents.mu.Unlock()
	return e
}

// pollReadyConn is a loopback agent connection that is a
// tailnet.ReadinessConn without a goroutine of its own: a
// readinessPoller watches its socket, armed again whenever a ReadNow
// finds nothing (the tailnet's connection calls back at every arrival;
// the session must work with both).
type pollReadyConn struct {
	*net.TCPConn
	p  *readinessPoller
	rc syscall.RawConn
	mu sync.Mutex
	w  *readinessWaiter // set by NotifyReadable
}

func (c *pollReadyConn) NotifyReadable(f func()) (stop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = c.p.watch(c.TCPConn, f)
	_ = c.w.arm()
	return func() { c.w.stop() }
}

func (c *pollReadyConn) ReadNow(p []byte) (int, error) {
	c.mu.Lock()
	w := c.w
	c.mu.Unlock()
	n, err := readNow(c.rc, p)
	switch {
	case n > 0:
		return n, nil
	case wouldBlock(err):
		if w != nil {
			_ = w.arm()
		}
		return 0, tailnet.ErrWouldBlock
	case err != nil:
		return 0, err
	}
	return 0, io.EOF
}

func (a *loopAgents) dialed() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.dials...)
}

type testEnv struct {
	t       testing.TB
	key     tokens.Key
	now     time.Time
	srv     *Server
	agents  *loopAgents
	stats   *recordingReporter
	addr    string
	client  *http.Client
	cancel  context.CancelFunc
	served  chan error
	options Options
}

func randomKey(t testing.TB, seq int32) tokens.Key {
	t.Helper()
	b := make([]byte, 64)
	_, _ = rand.Read(b)
	k, err := tokens.ParseKey(tokens.FeatureAppToken, hex.EncodeToString(b), seq, time.Now().Add(-time.Hour), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testRouter(t testing.TB) appurl.Router {
	t.Helper()
	p, err := appurl.CompileHostnamePattern(testWildcard)
	if err != nil {
		t.Fatal(err)
	}
	return appurl.Router{Wildcard: p, AccessHost: testAccessHost, DashboardHost: testDashboardHost}
}

// newEnv builds a server; mutate adjusts options before New.
func newEnv(t testing.TB, mutate func(*Options)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, key: randomKey(t, 7), now: time.Now(), agents: &loopAgents{}, stats: &recordingReporter{}}
	keys := tokens.NewKeySet(e.key)
	o := Options{
		AccessURL:    &url.URL{Scheme: "https", Host: testAccessHost},
		DashboardURL: &url.URL{Scheme: "https", Host: testDashboardHost},
		Router:       testRouter(t),
		Verifier:     &tokens.Verifier{Keys: keys.Source(time.Now)},
		Agents:       e.agents,
		Stats:        e.stats,
		Version:      "v9.9.9-test",
		DialTimeout:  2 * time.Second,
	}
	if mutate != nil {
		mutate(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.options = srv, o
	return e
}

// start serves on loopback; requests to any host reach the server.
func (e *testEnv) start() *testEnv {
	t := e.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.served = make(chan error, 1)
	go func() { e.served <- e.srv.Serve(ctx, ln) }()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.addr)
		},
		DisableCompression: true,
	}
	e.client = &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       20 * time.Second,
	}
	t.Cleanup(func() {
		e.stop()
		tr.CloseIdleConnections()
	})
	return e
}

// stop shuts the server down and waits for Serve.
func (e *testEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.served:
		if err != nil {
			e.t.Errorf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		e.t.Error("Serve did not return after shutdown")
	}
	e.cancel = nil
}

func pathAppRequest(app string) appurl.Request {
	return appurl.Request{
		AccessMethod:      appurl.AccessMethodPath,
		BasePath:          "/@alice/dev.main/apps/" + app + "/",
		UsernameOrID:      "alice",
		WorkspaceNameOrID: "dev",
		AgentNameOrID:     "main",
		AppSlugOrPort:     app,
	}
}

func subdomainAppRequest(app string) appurl.Request {
	return appurl.Request{
		AccessMethod:      appurl.AccessMethodSubdomain,
		BasePath:          "/",
		UsernameOrID:      "alice",
		WorkspaceNameOrID: "dev",
		AgentNameOrID:     "main",
		AppSlugOrPort:     app,
	}
}

func terminalRequest(agent uuid.UUID) appurl.Request {
	return appurl.Request{
		AccessMethod:  appurl.AccessMethodTerminal,
		BasePath:      appurl.TerminalPath(agent),
		AgentNameOrID: agent.String(),
	}
}

// token signs a token with the env's key.
func (e *testEnv) token(req appurl.Request, appURL string) string {
	return e.tokenWith(e.key, req, appURL, time.Now().Add(time.Minute))
}

func (e *testEnv) tokenWith(key tokens.Key, req appurl.Request, appURL string, exp time.Time) string {
	e.t.Helper()
	s, err := tokens.SignToken(key, tokens.SignedToken{
		Request:     req,
		UserID:      testUserID,
		WorkspaceID: testWorkspaceID,
		AgentID:     testAgentID,
		AppURL:      appURL,
		Expiry:      exp,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// do sends a request to rawURL (its host becomes the Host header).
func (e *testEnv) do(method, rawURL, token string, hdr http.Header) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set(edgewire.AppTokenHeader, token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// recordingReporter records uploads; fail makes uploads fail.
type recordingReporter struct {
	mu      sync.Mutex
	fail    bool
	batches [][]StatsReport
}

func (r *recordingReporter) ReportAppStats(_ context.Context, stats []StatsReport) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("primary unavailable")
	}
	r.batches = append(r.batches, append([]StatsReport(nil), stats...))
	return nil
}

func (r *recordingReporter) all() []StatsReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []StatsReport
	for _, b := range r.batches {
		out = append(out, b...)
	}
	return out
}
