package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

// TestFaultAuthzDown: with authz gone Envoy fails closed (503 on app
// routes for every request that needs authz, never an allow), while a
// warm browser whose token cookie still verifies is served by the fast
// path (Envoy and the dialer verify it without authz, as Coder's own
// proxy would), health probes
// still answer and say why, open websockets are not cut; authz started
// again on the same address serves again without touching Envoy.
func TestFaultAuthzDown(t *testing.T) {
	f := &faults{}
	fp := startEdge(t, withFaults(f), WithQuietLogs())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fp.signInToApps(t)
	ws := fp.openEchoSocket(ctx, t, fp.browser)
	session := fp.newSession(t)
	plain := fp.plainClient(t)

	if err := fp.dev.StopAuthz(); err != nil {
		t.Fatal(err)
	}
	if a := fetch(fp.browser, "http://"+codeHost+"/echo", nil); a.status != http.StatusOK || !isEcho(a.body) {
		t.Errorf("warm browser, authz down: %v; want the fast path to serve its valid token", a)
	}
	for name, try := range map[string]func() answer{
		"new session": func() answer { return fetch(plain, sessionApp, withSession(session)) },
		"anonymous":   func() answer { return fetch(plain, "http://"+codeHost+"/", nil) },
		"terminal route": func() answer {
			return fetch(plain, "http://"+accessHost+"/api/v2/workspaceagents/"+demoAgent.String()+"/pty", nil)
		},
	} {
		a := try()
		if a.err != nil || a.status != http.StatusServiceUnavailable || isEcho(a.body) || a.took > 3*time.Second {
			t.Errorf("%s, authz down: %v; want Envoy's 503 within 3 s", name, a)
		}
		if got := a.header.Get("Retry-After"); got != "1" {
			t.Errorf("%s, authz down: Retry-After %q, want 1", name, got)
		}
	}
	// A websocket upgrade is refused the same way.
	if c, res, err := fp.dialWebsocket(ctx, "ws://"+echoHost+"/", nil); err == nil {
		_ = c.CloseNow()
		t.Error("a websocket to an app opened while authz is down")
	} else if res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("websocket upgrade, authz down: %v", err)
	}
	// The websocket opened before is between Envoy and the dialer only.
	if err := ws.echo(ctx, "authz down"); err != nil {
		t.Errorf("open app websocket, authz down: %v", err)
	}
	// Probes answer; the report says what is wrong.
	if a := fetch(plain, "http://"+accessHost+"/healthz", nil); a.status != http.StatusOK {
		t.Errorf("/healthz through the edge, authz down: %v", a)
	}
	a := fetch(plain, "http://"+accessHost+"/healthz-report", nil)
	if a.status != http.StatusOK || !strings.Contains(a.body, "authz at ") {
		t.Errorf("/healthz-report through the edge, authz down: %v; want an error naming authz", a)
	}

	if err := fp.dev.StartAuthz(ctx); err != nil {
		t.Fatal(err)
	}
	took := fp.waitAppServed(t, 20*time.Second, "the warm browser is served again")
	t.Logf("authz serving through Envoy %v after it was started again", took.Round(time.Millisecond))
	if a := fetch(plain, sessionApp, withSession(session)); a.status != http.StatusOK || !isEcho(a.body) {
		t.Errorf("new session, authz back: %v", a)
	}
	if a := fetch(plain, "http://"+codeHost+"/", nil); a.status != http.StatusSeeOther {
		t.Errorf("anonymous, authz back: %v; want the 303 to log in", a)
	}
	waitFor(t, 10*time.Second, "the health report is clean", func() (bool, string) {
		errs, warns := fp.dialerReport(t)
		return len(errs)+len(warns) == 0, strings.Join(append(errs, warns...), "; ")
	})
}

// closeOutcome is how a websocket client saw its connection end.
type closeOutcome struct {
	err  error
	took time.Duration
}

// clean: a close frame with 1001 (Going Away) or the connection closed
// under it (EOF), not a timeout of our own.
func (o closeOutcome) clean() bool {
	if o.err == nil || errors.Is(o.err, context.DeadlineExceeded) || errors.Is(o.err, context.Canceled) {
		return false
	}
	if st := websocket.CloseStatus(o.err); st != -1 {
		return st == websocket.StatusGoingAway
	}
	return errors.Is(o.err, io.EOF) || errors.Is(o.err, io.ErrUnexpectedEOF) || strings.Contains(o.err.Error(), "EOF") ||
		strings.Contains(o.err.Error(), "connection reset")
}

// waitClosed reads c until it fails and reports how.
func waitClosed(ctx context.Context, c *websocket.Conn, start func() time.Time) <-chan closeOutcome {
	out := make(chan closeOutcome, 1)
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				out <- closeOutcome{err: err, took: time.Since(start())}
				return
			}
		}
	}()
	return out
}

// TestFaultDialerRestart: a rolling restart of the dialer under open app
// websockets and a terminal. Clients see the end promptly (1001 for the
// terminal, the connection closed for apps after the 2 s grace), Envoy
// answers 503 while no dialer listens, and once a new dialer is up on the
// same address clients reconnect: apps work and the terminal resumes its
// screen with the same reconnect ID (the agent kept the PTY).
func TestFaultDialerRestart(t *testing.T) {
	f := &faults{}
	fp := startEdge(t, withFaults(f), WithQuietLogs())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fp.signInToApps(t)
	const apps = 3
	var sockets []*appSocket
	for i := range apps {
		s := fp.openEchoSocket(ctx, t, fp.browser)
		if err := s.echo(ctx, fmt.Sprint("hello ", i)); err != nil {
			t.Fatal(err)
		}
		sockets = append(sockets, s)
	}
	ptyURL, ptyTok := fp.ptyToken(t, demoAgent)
	reconnect := uuid.New()
	term, err := fp.openTerminal(ctx, ptyURL, ptyTok, reconnect)
	if err != nil {
		t.Fatal(err)
	}
	defer term.CloseNow()
	if err := term.Write(ctx, websocket.MessageBinary, termInput("echo before-''restart\r")); err != nil {
		t.Fatal(err)
	}
	if out, err := readUntil(ctx, term, "before-restart"); err != nil {
		t.Fatalf("terminal before the restart (have %q): %v", out, err)
	}

	var stopAt atomic.Pointer[time.Time]
	started := func() time.Time { return *stopAt.Load() }
	now := time.Now()
	stopAt.Store(&now)
	readCtx, readCancel := context.WithTimeout(ctx, 15*time.Second)
	defer readCancel()
	var ends []<-chan closeOutcome
	for _, s := range sockets {
		ends = append(ends, waitClosed(readCtx, s.c, started))
	}
	termEnd := waitClosed(readCtx, term, started)

	stopped := make(chan error, 1)
	go func() { stopped <- fp.dev.StopDialer() }()
	to := <-termEnd
	if st := websocket.CloseStatus(to.err); st != websocket.StatusGoingAway || to.took > 2*time.Second {
		t.Errorf("terminal during the dialer's shutdown: %v after %v; want close 1001 at once", to.err, to.took)
	}
	for i, end := range ends {
		o := <-end
		// The grace is 2 s; the cut follows at once.
		if !o.clean() || o.took > 5*time.Second {
			t.Errorf("app websocket %d during the dialer's shutdown: %v after %v; want a clean end within 5 s", i, o.err, o.took)
		}
		t.Logf("app websocket %d ended after %v: %v", i, o.took.Round(time.Millisecond), o.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	t.Logf("dialer stopped %v after the stop began", time.Since(started()).Round(time.Millisecond))

	if a := fetch(fp.browser, "http://"+codeHost+"/echo", nil); a.status != http.StatusServiceUnavailable || isEcho(a.body) || a.took > 3*time.Second {
		t.Errorf("request with no dialer: %v; want Envoy's 503 within 3 s", a)
	}

	if err := fp.dev.StartDialer(ctx); err != nil {
		t.Fatal(err)
	}
	took := fp.waitAppServed(t, 30*time.Second, "the app answers through the new dialer")
	t.Logf("app served %v after the new dialer started", took.Round(time.Millisecond))
	for i := range apps {
		s := fp.openEchoSocket(ctx, t, fp.browser)
		if err := s.echo(ctx, fmt.Sprint("again ", i)); err != nil {
			t.Errorf("app websocket %d after the restart: %v", i, err)
		}
	}
	term2, err := fp.openTerminal(ctx, ptyURL, ptyTok, reconnect)
	if err != nil {
		t.Fatalf("terminal after the restart: %v", err)
	}
	defer term2.CloseNow()
	// The same screen comes back: the agent kept the PTY.
	if out, err := readUntil(ctx, term2, "before-restart"); err != nil {
		t.Fatalf("terminal after the restart, same reconnect ID (have %q): %v", out, err)
	}
	if err := term2.Write(ctx, websocket.MessageBinary, termInput("echo after-''restart\r")); err != nil {
		t.Fatal(err)
	}
	if out, err := readUntil(ctx, term2, "after-restart"); err != nil {
		t.Fatalf("terminal input after the restart (have %q): %v", out, err)
	}
}

// TestFaultAgentReturns: an agent that disappears gives the 502 page in
// bounded time; started again with the same ID and new keys, requests
// work again once it has re-coordinated, without touching the proxy.
func TestFaultAgentReturns(t *testing.T) {
	f := &faults{}
	fp := startEdge(t, withFaults(f), WithQuietLogs())
	received(t, fp.login(t, "http://"+codeHost+"/echo"))
	if err := fp.dev.StopAgent(demoAgent); err != nil {
		t.Fatal(err)
	}
	a := fetch(fp.browser, "http://"+codeHost+"/echo", nil)
	if a.status != http.StatusBadGateway || !strings.HasPrefix(a.ctype, "text/html") || isEcho(a.body) || a.took > 6*time.Second {
		t.Errorf("agent gone: %v; want the 502 page within the dial timeout (3 s) and some", a)
	}
	t.Logf("agent gone: %d after %v", a.status, a.took.Round(time.Millisecond))
	if err := fp.dev.StartAgent(demoAgent); err != nil {
		t.Fatal(err)
	}
	took := fp.waitAppServed(t, 30*time.Second, "the returned agent answers")
	t.Logf("agent answers %v after it was started again", took.Round(time.Millisecond))
	// Websockets and bulk bytes go through the new tunnel too.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if a := fetch(fp.browser, "http://"+echoHost+"/", nil); a.status != http.StatusOK {
		t.Fatalf("echo app: %v", a)
	}
	if err := fp.openEchoSocket(ctx, t, fp.browser).echo(ctx, "returned"); err != nil {
		t.Errorf("websocket to the returned agent: %v", err)
	}
}

// TestFaultAgentVanishes: an agent whose machine dies (no FIN, no RST,
// its coordination stream just drops) gives the 502 page within the
// documented bound (10 s by default), also for a request that the dialer
// would otherwise send on a pooled connection to it; the agent comes back
// once it is started again.
func TestFaultAgentVanishes(t *testing.T) {
	f := &faults{}
	fp := startEdge(t, withFaults(f), WithQuietLogs())
	received(t, fp.login(t, "http://"+codeHost+"/echo"))
	// Warm: Envoy and the dialer now hold pooled connections to the agent.
	for range 3 {
		if a := fetch(fp.browser, "http://"+codeHost+"/echo", nil); a.status != http.StatusOK || !isEcho(a.body) {
			t.Fatalf("before: %v", a)
		}
	}
	if err := fp.dev.VanishAgent(demoAgent); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		a := fetch(fp.browser, "http://"+codeHost+"/echo", nil)
		if a.err != nil || a.status != http.StatusBadGateway || !strings.HasPrefix(a.ctype, "text/html") ||
			!strings.Contains(pageText(a.body), "Failed to proxy request to application") || a.took > 11*time.Second {
			t.Fatalf("request %d to the vanished agent: %v; want the 502 page within 10 s", i, a)
		}
		t.Logf("request %d to the vanished agent: %d after %v", i, a.status, a.took.Round(time.Millisecond))
	}
	if err := fp.dev.StartAgent(demoAgent); err != nil {
		t.Fatal(err)
	}
	fp.waitAppServed(t, 30*time.Second, "the returned agent answers")
}

// TestFaultKeyRotationUnderTraffic: the primary rotates both key
// features (app token signing and API key encryption) three times while
// warm browsers, new sessions and full login hand-offs run: not one
// request fails.
func TestFaultKeyRotationUnderTraffic(t *testing.T) {
	f := &faults{}
	fp := startEdge(t, withFaults(f), WithQuietLogs())
	received(t, fp.login(t, "http://"+codeHost+"/echo"))
	plain := fp.plainClient(t)

	var (
		mu       sync.Mutex
		failures []string
		counts   = map[string]int{}
	)
	record := func(kind string, a answer, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		counts[kind]++
		if !ok {
			failures = append(failures, kind+": "+a.String())
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // warm cookies
		for {
			select {
			case <-stop:
				return
			default:
			}
			a := fetch(fp.browser, "http://"+codeHost+"/echo", nil)
			record("warm", a, a.status == http.StatusOK && isEcho(a.body))
		}
	})
	wg.Go(func() { // new sessions: one issue call each
		for {
			select {
			case <-stop:
				return
			default:
			}
			session, err := newSessionQuiet(plain)
			if err != nil {
				record("new session", answer{err: err}, false)
				continue
			}
			a := fetch(plain, sessionApp, withSession(session))
			record("new session", a, a.status == http.StatusOK && isEcho(a.body))
		}
	})
	wg.Go(func() { // whole hand-offs: a smuggled key encrypted with the newest API key
		for {
			select {
			case <-stop:
				return
			default:
			}
			res := loginQuiet(fp.newBrowser(t), "http://"+codeHost+"/echo")
			record("hand-off", res, res.status == http.StatusOK && isEcho(res.body))
		}
	})
	for range 3 {
		time.Sleep(time.Second)
		if err := fp.dev.Primary.RotateKeys(); err != nil {
			t.Error(err)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("requests during 3 rotations: %v", counts)
	for _, f := range failures {
		t.Errorf("failed during key rotation: %s", f)
	}
	if counts["warm"] == 0 || counts["new session"] == 0 || counts["hand-off"] == 0 {
		t.Errorf("not every kind of traffic ran: %v", counts)
	}
}

// newSessionQuiet is newSession without t.
func newSessionQuiet(c *http.Client) (string, error) {
	res, err := c.PostForm("http://"+dashboardHost+"/login", map[string][]string{"username": {"alice"}, "password": {"alice"}, "redirect": {"/"}})
	if err != nil {
		return "", err
	}
	_ = res.Body.Close()
	for _, ck := range res.Cookies() {
		if ck.Name == tokens.SessionTokenCookie {
			return ck.Value, nil
		}
	}
	return "", fmt.Errorf("login: status %d, no session cookie", res.StatusCode)
}

// loginQuiet is login without t, for browser: the hand-off for appURL,
// returning the final answer.
func loginQuiet(browser *http.Client, appURL string) answer {
	start := time.Now()
	res, err := browser.Get(appURL)
	if err != nil {
		return answer{err: err}
	}
	_ = res.Body.Close()
	if res.Request.URL.Host != dashboardHost || res.Request.URL.Path != "/login" {
		return answer{err: fmt.Errorf("anonymous %s ended at %s (status %d)", appURL, res.Request.URL, res.StatusCode)}
	}
	res, err = browser.PostForm("http://"+dashboardHost+"/login", map[string][]string{"username": {"alice"}, "password": {"alice"}, "redirect": {res.Request.URL.Query().Get("redirect")}})
	if err != nil {
		return answer{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, ctype: res.Header.Get("Content-Type"), body: string(b), took: time.Since(start), err: err}
}
