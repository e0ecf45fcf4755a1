package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/tokens"
)

// switchListener is the dev primary's listener under a test's control:
// Down closes the socket (new connections are refused, as with a dead
// process) and cuts every accepted connection (the coordination
// websockets among them); Up listens on the same address again; Cut only
// cuts the accepted connections.
type switchListener struct {
	addr   string
	closed chan struct{}

	mu    sync.Mutex
	ln    net.Listener // nil while down
	upCh  chan struct{}
	conns map[net.Conn]struct{}
	once  sync.Once
}

func newSwitchListener(t testing.TB) *switchListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &switchListener{addr: ln.Addr().String(), closed: make(chan struct{}), ln: ln, upCh: make(chan struct{}), conns: map[net.Conn]struct{}{}}
}

func (s *switchListener) Accept() (net.Conn, error) {
	for {
		s.mu.Lock()
		ln, up := s.ln, s.upCh
		s.mu.Unlock()
		if ln == nil {
			select {
			case <-up:
				continue
			case <-s.closed:
				return nil, net.ErrClosed
			}
		}
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			replaced := s.ln != ln
			s.mu.Unlock()
			select {
			case <-s.closed:
				return nil, err
			default:
			}
			if replaced {
				continue // taken down under us; wait for Up
			}
			return nil, err
		}
		s.mu.Lock()
		if s.ln != ln {
			s.mu.Unlock()
			_ = c.Close()
			continue
		}
		tc := &trackedConn{Conn: c, s: s}
		s.conns[tc] = struct{}{}
		s.mu.Unlock()
		return tc, nil
	}
}

type trackedConn struct {
	net.Conn
	s    *switchListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// Cut closes every connection accepted so far.
func (s *switchListener) Cut() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Down refuses new connections and cuts the open ones.
func (s *switchListener) Down(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	ln := s.ln
	s.ln = nil
	s.upCh = make(chan struct{})
	s.mu.Unlock()
	if ln == nil {
		t.Fatal("the primary is already down")
	}
	_ = ln.Close()
	s.Cut()
}

// Up listens on the same address again.
func (s *switchListener) Up(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the primary cannot listen on %s again: %v", s.addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	close(s.upCh)
	s.mu.Unlock()
}

func (s *switchListener) Close() error {
	s.once.Do(func() { close(s.closed) })
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		return ln.Close()
	}
	return nil
}

func (s *switchListener) Addr() net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", s.addr)
	return a
}

// slowIssue delays the primary's issue-signed-app-token answers by the
// set duration (or until the caller gives up): a primary that is up but
// overloaded.
type slowIssue struct {
	delay atomic.Int64
	// held counts issue calls that were delayed.
	held atomic.Int64
	// refuseCoordination answers the proxy coordination endpoint with a
	// 503 (a primary that is up but whose coordinator is not); refused
	// counts those answers.
	refuseCoordination atomic.Bool
	refused            atomic.Int64
}

func (s *slowIssue) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.refuseCoordination.Load() && r.URL.Path == "/api/v2/workspaceproxies/me/coordinate" {
			s.refused.Add(1)
			http.Error(w, "coordinator unavailable", http.StatusServiceUnavailable)
			return
		}
		if d := time.Duration(s.delay.Load()); d > 0 && strings.HasSuffix(r.URL.Path, "/issue-signed-app-token") {
			s.held.Add(1)
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// faults is the dev primary under a test's control: behind a
// switchListener and a slowIssue.
type faults struct {
	primaryLn *switchListener
	slow      *slowIssue
}

// withFaults puts the whole path's dev primary behind f's listener and
// middleware, which it fills in. Whatever the test left broken, the
// primary comes back before the deployment stops, so that the services
// can deregister and say goodbye.
func withFaults(f *faults) edgeOption {
	return func(s *edgeSetup) {
		f.primaryLn, f.slow = newSwitchListener(s.t), &slowIssue{}
		WithDev(func(c *devstack.DevConfig) {
			c.PrimaryListener, c.PrimaryMiddleware = f.primaryLn, f.slow.wrap
		})(s)
		s.beforeClose = append(s.beforeClose, func() {
			f.slow.delay.Store(0)
			f.primaryLn.mu.Lock()
			down := f.primaryLn.ln == nil
			f.primaryLn.mu.Unlock()
			if down {
				f.primaryLn.Up(s.t)
			}
		})
	}
}

// metric is the value of an unlabelled series of the dialer (-1: absent;
// WithMetrics).
func (fp *edge) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := fp.dialerMetrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// signInToApps walks fp.browser through the login hand-off of the code
// app and then of the echo app.
func (fp *edge) signInToApps(t *testing.T) {
	t.Helper()
	received(t, fp.login(t, "http://"+codeHost+"/echo"))
	if a := fetch(fp.browser, "http://"+echoHost+"/", nil); a.status != http.StatusOK {
		t.Fatalf("echo app hand-off: %v", a)
	}
}

// waitAppServed waits until fp.browser gets the code app's echo (200)
// within the bound and returns how long it took.
func (fp *edge) waitAppServed(t *testing.T, within time.Duration, what string) time.Duration {
	t.Helper()
	return waitFor(t, within, what, func() (bool, string) {
		a := fetch(fp.browser, "http://"+codeHost+"/echo", nil)
		return a.status == http.StatusOK && isEcho(a.body), a.String()
	})
}

// newSession logs alice in on the dashboard and returns the new session
// token (a session authz has never seen, so it must ask the primary).
func (fp *edge) newSession(t *testing.T) string {
	t.Helper()
	res, err := fp.plainClient(t).PostForm("http://"+dashboardHost+"/login", url.Values{"username": {"alice"}, "password": {"alice"}, "redirect": {"/"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	for _, c := range res.Cookies() {
		if c.Name == tokens.SessionTokenCookie {
			return c.Value
		}
	}
	t.Fatalf("login: status %d, no %s cookie", res.StatusCode, tokens.SessionTokenCookie)
	return ""
}

// answer is one response as the user sees it.
type answer struct {
	status int
	ctype  string
	body   string
	took   time.Duration
	err    error
	header http.Header
}

func (a answer) String() string {
	if a.err != nil {
		return "error " + a.err.Error()
	}
	b := a.body
	if strings.HasPrefix(a.ctype, "text/html") {
		b = pageText(b)
	}
	if len(b) > 300 {
		b = b[:300] + "…"
	}
	return http.StatusText(a.status) + " (" + a.ctype + ") after " + a.took.Round(time.Millisecond).String() + ": " + b
}

// pageText is an HTML page's text, tags and style removed, spaces folded.
func pageText(page string) string {
	if i := strings.Index(page, "</style>"); i >= 0 {
		page = page[i+len("</style>"):]
	}
	var out strings.Builder
	in := false
	for _, r := range page {
		switch {
		case r == '<':
			in = true
			out.WriteByte(' ')
		case r == '>':
			in = false
		case !in:
			out.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(out.String()), " ")
}

// fetch sends a GET (HTML wanted, as a browser) and reads the answer.
func fetch(c *http.Client, rawURL string, header http.Header) answer {
	start := time.Now()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, ctype: res.Header.Get("Content-Type"), body: string(b), took: time.Since(start), err: err, header: res.Header}
}

// isEcho reports whether body is the demo app's echo of a request: the
// proof that a request was allowed through to the agent.
func isEcho(body string) bool {
	return strings.Contains(body, `"x_forwarded_for"`) || strings.Contains(body, `"cookie_names"`)
}

// sessionApp is the path app URL a session-token request goes to.
const sessionApp = "http://" + accessHost + "/@alice/dev.main/apps/code/echo"

// withSession is the header of an API client that signs in with session.
func withSession(session string) http.Header {
	return http.Header{"Coder-Session-Token": {session}}
}

// waitFor polls cond every 100 ms until it holds or within passes, and
// returns how long it took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for {
		ok, s := cond()
		if ok {
			return time.Since(start)
		}
		last = s
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v (last: %s)", what, within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dialerReport reads the dialer's /healthz-report straight from its
// listener.
func (fp *edge) dialerReport(t *testing.T) (errs, warnings []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+fp.dev.DialerAddr.String()+"/healthz-report", nil)
	req.Host = accessHost
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return []string{err.Error()}, nil
	}
	defer res.Body.Close()
	var report struct {
		Errors   []string `json:"errors"`
		Warnings []string `json:"warnings"`
	}
	if err := json.NewDecoder(res.Body).Decode(&report); err != nil {
		return []string{"decode: " + err.Error()}, nil
	}
	return report.Errors, report.Warnings
}

// appSocket is an open websocket to the echo app through the whole path.
type appSocket struct {
	c *websocket.Conn
}

// openEchoSocket opens a websocket to the echo app with browser's cookies
// (browser must have done the echo app's hand-off).
func (fp *edge) openEchoSocket(ctx context.Context, t *testing.T, browser *http.Client) *appSocket {
	t.Helper()
	u, _ := url.Parse("http://" + echoHost + "/")
	var cookies []string
	for _, c := range browser.Jar.Cookies(u) {
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	c, res, err := fp.dialWebsocket(ctx, "ws://"+echoHost+"/", http.Header{"Cookie": {strings.Join(cookies, "; ")}})
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		t.Fatalf("echo websocket: %v (status %d)", err, status)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return &appSocket{c: c}
}

// echo sends msg and checks it comes back.
func (s *appSocket) echo(ctx context.Context, msg string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return err
	}
	_, b, err := s.c.Read(ctx)
	if err != nil {
		return err
	}
	if !bytes.Equal(b, []byte(msg)) {
		return errors.New("echo: got " + string(b))
	}
	return nil
}

// ptyToken asks the dashboard for a terminal token (as the Coder UI does).
func (fp *edge) ptyToken(t *testing.T, agent uuid.UUID) (ptyURL, token string) {
	t.Helper()
	session, _ := fp.dev.Primary.SessionToken("alice")
	ptyURL = "ws://" + accessHost + "/api/v2/workspaceagents/" + agent.String() + "/pty"
	body, _ := json.Marshal(map[string]string{"url": ptyURL, "agentID": agent.String()})
	req, _ := http.NewRequest(http.MethodPost, "http://"+dashboardHost+"/api/v2/applications/reconnecting-pty-signed-token", bytes.NewReader(body))
	req.Header.Set("Coder-Session-Token", session)
	req.Header.Set("Content-Type", "application/json")
	res, err := fp.plainClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		SignedToken string `json:"signed_token"`
	}
	if err := json.Unmarshal([]byte(readAll(t, res)), &tok); err != nil || tok.SignedToken == "" {
		t.Fatalf("reconnecting-pty-signed-token: status %d, %v", res.StatusCode, err)
	}
	return ptyURL, tok.SignedToken
}

// openTerminal opens the web terminal with reconnect ID id.
func (fp *edge) openTerminal(ctx context.Context, ptyURL, token string, id uuid.UUID) (*websocket.Conn, error) {
	q := url.Values{"reconnect": {id.String()}, "width": {"80"}, "height": {"24"}, tokens.SignedAppTokenQueryParam: {token}}
	c, res, err := fp.dialWebsocket(ctx, ptyURL+"?"+q.Encode(), nil)
	if err != nil {
		if res != nil {
			return nil, errors.New(err.Error() + " (status " + http.StatusText(res.StatusCode) + ")")
		}
		return nil, err
	}
	return c, nil
}

// termInput is one keystroke batch in the terminal protocol.
func termInput(s string) []byte {
	b, _ := json.Marshal(map[string]string{"data": s})
	return b
}

// readUntil reads terminal output until it contains want.
func readUntil(ctx context.Context, c *websocket.Conn, want string) (string, error) {
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		_, b, err := c.Read(ctx)
		if err != nil {
			return out.String(), err
		}
		out.Write(b)
	}
	return out.String(), nil
}
