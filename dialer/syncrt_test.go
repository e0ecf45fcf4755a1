package dialer

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/edgewire"
)

// scriptedApp is an app on loopback that answers each path with fixed
// bytes on keep-alive connections and records the requests it reads.
// "/hang" is never answered; after "/close…" the connection is closed.
// closeAfter makes it close each connection
// right after its first answer, without saying so (Connection: close
// absent), as apps with a short keep-alive timeout do.
type scriptedApp struct {
	addr       string
	answers    map[string]string
	closeAfter bool
	requests   chan *http.Request
	closed     chan struct{}
}

func newScriptedApp(t *testing.T, closeAfter bool, answers map[string]string) *scriptedApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &scriptedApp{addr: ln.Addr().String(), answers: answers, closeAfter: closeAfter,
		requests: make(chan *http.Request, 64), closed: make(chan struct{}, 64)}
	acceptLoopback(t, ln, a.serve)
	return a
}

func (a *scriptedApp) serve(c net.Conn) {
	defer func() { a.closed <- struct{}{} }()
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		a.requests <- req
		if req.URL.Path == "/hang" {
			continue
		}
		answer, ok := a.answers[req.URL.Path]
		if !ok {
			answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		}
		_, _ = io.WriteString(c, answer)
		if a.closeAfter || strings.HasPrefix(req.URL.Path, "/close") {
			return
		}
	}
}

func (a *scriptedApp) lastRequest(t *testing.T) *http.Request {
	t.Helper()
	var last *http.Request
	for {
		select {
		case r := <-a.requests:
			last = r
		default:
			if last == nil {
				t.Fatal("the app saw no request")
			}
			return last
		}
	}
}

const syncAppURL = "http://" + testAccessHost + "/@alice/dev.main/apps/code"

// TestSyncRoundTripReusesOneConnection: sequential GETs share one agent
// connection, and the app sees the request as the client sent it (no
// Accept-Encoding added, which http.Transport would add).
func TestSyncRoundTripReusesOneConnection(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newScriptedApp(t, false, nil)
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	for i := range 5 {
		resp := e.do("GET", syncAppURL+"/page", tok, nil)
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if r := app.lastRequest(t); r.Header.Get("Accept-Encoding") != "" {
			t.Fatalf("request %d reached the app with Accept-Encoding %q", i, r.Header.Get("Accept-Encoding"))
		}
	}
	if n := len(e.agents.dialed()); n != 1 {
		t.Errorf("%d dials for 5 sequential GETs, want 1", n)
	}
}

// TestPostStillUsesTransport: a request with a body goes through
// http.Transport (which asks for gzip on the client's behalf).
func TestPostStillUsesTransport(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newScriptedApp(t, false, nil)
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	req, _ := http.NewRequest("POST", syncAppURL+"/form", strings.NewReader("a=1"))
	req.Header.Set(edgewire.AppTokenHeader, tok)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
	if r := app.lastRequest(t); r.Method != "POST" || r.Header.Get("Accept-Encoding") != "gzip" {
		t.Fatalf("POST reached the app as %s with Accept-Encoding %q, want http.Transport's gzip", r.Method, r.Header.Get("Accept-Encoding"))
	}
}

// TestSyncRoundTripStaleIdleConnection: an app that closed a pooled
// connection while it was idle does not fail the next request: it is
// sent again on a new connection.
func TestSyncRoundTripStaleIdleConnection(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newScriptedApp(t, true, nil)
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	for i := range 3 {
		resp := e.do("GET", syncAppURL+"/", tok, nil)
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		select {
		case <-app.closed: // the idle connection is now stale
		case <-time.After(5 * time.Second):
			t.Fatal("the app did not close its connection")
		}
	}
	// Each request after the first found the pooled connection closed.
	if n := len(e.agents.dialed()); n != 3 {
		t.Errorf("%d dials, want 3", n)
	}
}

// TestSyncRoundTripFraming: bodiless answers (HEAD, 204, 304), chunked
// bodies with trailers and Content-Length reach the client intact, and
// the connection stays in step for the next request.
func TestSyncRoundTripFraming(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newScriptedApp(t, false, map[string]string{
		"/head":           "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
		"/empty":          "HTTP/1.1 204 No Content\r\nX-App: a\r\n\r\n",
		"/cached":         "HTTP/1.1 304 Not Modified\r\nEtag: \"v1\"\r\n\r\n",
		"/chunked":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n",
		"/length":         "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
		"/hint":           "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhint",
		"/close-identity": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
	})
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	check := func(method, path string, status int, body string, hdr map[string]string) *http.Response {
		t.Helper()
		resp := e.do(method, syncAppURL+path, tok, nil)
		got := readAll(t, resp)
		if resp.StatusCode != status || got != body {
			t.Fatalf("%s %s: %d %q, want %d %q", method, path, resp.StatusCode, got, status, body)
		}
		for k, v := range hdr {
			if g := resp.Header.Get(k); g != v {
				t.Errorf("%s %s: %s %q, want %q", method, path, k, g, v)
			}
		}
		return resp
	}
	check("HEAD", "/head", 200, "", map[string]string{"Content-Length": "5"})
	check("GET", "/empty", 204, "", map[string]string{"X-App": "a"})
	check("GET", "/cached", 304, "", map[string]string{"Etag": `"v1"`})
	resp := check("GET", "/chunked", 200, "hello, world", nil)
	if resp.Trailer.Get("X-Sum") != "12" {
		t.Errorf("trailer %v, want X-Sum: 12", resp.Trailer)
	}
	check("GET", "/length", 200, "0123456789", map[string]string{"Content-Length": "10"})
	check("GET", "/hint", 200, "hint", nil)
	if n := len(e.agents.dialed()); n != 1 {
		t.Errorf("%d dials, want 1: a response's framing was misread", n)
	}
	// A body delimited by the connection's end: the connection is not
	// reused.
	check("GET", "/close-identity", 200, "until close", nil)
	check("GET", "/length", 200, "0123456789", nil)
	if n := len(e.agents.dialed()); n != 2 {
		t.Errorf("%d dials, want 2 (the connection that ended a body is not reused)", n)
	}
}

// TestSyncRoundTripResponseTimeout: an app that never answers gets the
// 502 page with http.Transport's wording once the response timeout
// passes.
func TestSyncRoundTripResponseTimeout(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.ResponseTimeout = 300 * time.Millisecond }).start()
	app := newScriptedApp(t, false, nil)
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	resp := e.do("GET", syncAppURL+"/hang", tok, nil)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "Failed to proxy request to application: net/http: timeout awaiting response headers") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	select {
	case <-app.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection of the unanswered request was not closed")
	}
}

// TestSyncRoundTripClientGone: a client that gives up closes the app
// connection its request waits on.
func TestSyncRoundTripClientGone(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newScriptedApp(t, false, nil)
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", syncAppURL+"/hang", nil)
	req.Header.Set(edgewire.AppTokenHeader, tok)
	go func() {
		<-app.requests
		cancel()
	}()
	if resp, err := e.client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("request answered %d, want cancelled", resp.StatusCode)
	}
	select {
	case <-app.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the app connection outlived the cancelled request")
	}
}

// TestSyncRoundTripExtraBytesNotReused: an app that sends bytes past its
// response (a wrong Content-Length) does not get that connection again,
// so the stray bytes are never read as the next request's answer.
func TestSyncRoundTripExtraBytesNotReused(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newScriptedApp(t, false, map[string]string{
		"/sloppy": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray",
	})
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	for _, tt := range []struct{ path, want string }{{"/sloppy", "ok"}, {"/next", "ok"}} {
		resp := e.do("GET", syncAppURL+tt.path, tok, nil)
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != tt.want {
			t.Fatalf("%s: %d %q, want 200 %q", tt.path, resp.StatusCode, body, tt.want)
		}
	}
	if n := len(e.agents.dialed()); n != 2 {
		t.Errorf("%d dials, want 2 (the sloppy connection not reused)", n)
	}
}

// TestSyncRoundTripUpgrade: a protocol switch takes the synchronous round
// trip (the app sees the handshake as the client sent it: no
// Accept-Encoding added), bytes the app sends right behind its 101 reach
// the client first, and a connection whose switch was refused is not
// reused.
func TestSyncRoundTripUpgrade(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newScriptedApp(t, false, map[string]string{
		"/ws":     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\ngreeting",
		"/refuse": "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno",
	})
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")

	c, br := openRawUpgrade(t, e.addr, tok, nil)
	defer c.Close()
	got := make([]byte, len("greeting"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "greeting" {
		t.Fatalf("bytes behind the 101: %q, %v", got, err)
	}
	r := app.lastRequest(t)
	if r.URL.Path != "/ws" || r.Header.Get("Upgrade") != "echo" || r.Header.Get("Accept-Encoding") != "" {
		t.Errorf("the app saw %s with Upgrade %q, Accept-Encoding %q; want /ws, echo, none (the synchronous round trip)",
			r.URL.Path, r.Header.Get("Upgrade"), r.Header.Get("Accept-Encoding"))
	}

	before := len(e.agents.dialed())
	resp := e.do("GET", syncAppURL+"/refuse", tok, http.Header{"Upgrade": {"echo"}, "Connection": {"Upgrade"}})
	if body := readAll(t, resp); resp.StatusCode != http.StatusUpgradeRequired || body != "no" {
		t.Fatalf("refused switch: %d %q", resp.StatusCode, body)
	}
	resp = e.do("GET", syncAppURL+"/page", tok, nil)
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("GET after the refused switch: %d %q", resp.StatusCode, body)
	}
	if n := len(e.agents.dialed()) - before; n != 2 {
		t.Errorf("%d dials for a refused switch and a GET, want 2 (the refused switch's connection is not reused)", n)
	}
}

// TestSyncRoundTripUpgradeOnPooledConnection: a handshake takes a pooled
// connection when there is one (one dial for a GET and a switch); when
// the app had closed that connection while it was idle, the handshake is
// sent again on a new connection and switches there.
func TestSyncRoundTripUpgradeOnPooledConnection(t *testing.T) {
	for _, tt := range []struct {
		name       string
		closeAfter bool
		dials      int
	}{{"pooled", false, 1}, {"stale", true, 2}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil).start()
			app := newScriptedApp(t, tt.closeAfter, map[string]string{
				"/ws": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhi",
			})
			e.agents.set(8080, app.addr)
			tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
			resp := e.do("GET", syncAppURL+"/", tok, nil)
			if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("GET: %d %q", resp.StatusCode, body)
			}
			if tt.closeAfter {
				select {
				case <-app.closed: // the pooled connection is now stale
				case <-time.After(5 * time.Second):
					t.Fatal("the app did not close its connection")
				}
			}
			c, br := openRawUpgrade(t, e.addr, tok, nil)
			defer c.Close()
			got := make([]byte, 2)
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "hi" {
				t.Fatalf("after the 101: %q, %v", got, err)
			}
			if n := len(e.agents.dialed()); n != tt.dials {
				t.Errorf("%d dials, want %d", n, tt.dials)
			}
		})
	}
}

// offsetClock is the wall clock moved by a settable offset.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestSyncRoundTripUnsolicitedBytesOnIdleConnection: an app that writes
// on a keep-alive connection while it is idle (here a whole stray
// response, a while after its answer) does not answer the next request
// with those bytes: a connection idle for a second is looked at before it
// is used, and dropped. A quiet one is used again.
func TestSyncRoundTripUnsolicitedBytesOnIdleConnection(t *testing.T) {
	appSides(t, syncRoundTripUnsolicitedBytesOnIdleConnection)
}

// With agent connections that can be read without waiting (the
// tailnet's), every reuse is looked at: the clock does not need to move.
func syncRoundTripUnsolicitedBytesOnIdleConnection(t *testing.T, watch func(*testEnv) *testEnv) {
	clk := &offsetClock{}
	e := watch(newEnv(t, func(o *Options) { o.Now = clk.Now }))
	step := 2 * time.Second
	if e.agents.poller != nil {
		step = 0
	}
	// Long enough that a loaded machine does not preempt the probe's read
	// past its deadline (which would skip the look).
	e.srv.transports.idleProbeWait = 100 * time.Millisecond
	e.start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	strayed := make(chan struct{})
	var conns atomic.Int32
	acceptLoopback(t, ln, func(c net.Conn) {
		defer c.Close()
		first := conns.Add(1) == 1
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
			if first && req.URL.Path == "/first" {
				time.Sleep(20 * time.Millisecond)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
				close(strayed)
			}
		}
	})
	e.agents.set(8080, ln.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	get := func(path string) {
		t.Helper()
		resp := e.do("GET", syncAppURL+path, tok, nil)
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("%s: %d %q, want 200 \"ok\"", path, resp.StatusCode, body)
		}
	}
	get("/first")
	<-strayed
	time.Sleep(20 * time.Millisecond) // the stray bytes reach the pooled connection
	clk.advance(step)
	get("/second")
	if n := len(e.agents.dialed()); n != 2 {
		t.Errorf("%d dials after the stray bytes, want 2", n)
	}
	clk.advance(step)
	get("/third")
	if n := len(e.agents.dialed()); n != 2 {
		t.Errorf("%d dials, want 2 (a quiet idle connection is used again)", n)
	}
}
