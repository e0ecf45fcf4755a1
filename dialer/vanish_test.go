package dialer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keepAliveApp is an agent's app on loopback that answers "ok" on
// keep-alive connections. Once frozen it reads requests and never answers,
// as a pooled connection to an agent that went away behaves on the
// tailnet (nothing resets it). closed receives one value per connection
// the app sees closed by the dialer.
type keepAliveApp struct {
	addr   string
	frozen atomic.Bool
	closed chan struct{}
}

// acceptLoopback serves each connection ln accepts with serve, on its own
// goroutine, until the test ends; then it closes ln and every connection
// and waits for the goroutines.
func acceptLoopback(t *testing.T, ln net.Listener, serve func(net.Conn)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
}

func newKeepAliveApp(t *testing.T) *keepAliveApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &keepAliveApp{addr: ln.Addr().String(), closed: make(chan struct{}, 16)}
	acceptLoopback(t, ln, a.serve)
	return a
}

func (a *keepAliveApp) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if err == io.EOF || strings.Contains(err.Error(), "reset") {
				a.closed <- struct{}{}
			}
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		if a.frozen.Load() {
			continue // swallowed: no answer, connection kept open
		}
		_, _ = fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// TestVanishedAgentOnPooledConnectionAnswers502InTime: a request sent on
// a pooled connection to an agent that has gone away gets the 502 page
// once the response timeout passes, instead of hanging for minutes.
func TestVanishedAgentOnPooledConnectionAnswers502InTime(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.ResponseTimeout = time.Second }).start()
	app := newKeepAliveApp(t)
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	url := "http://" + testAccessHost + "/@alice/dev.main/apps/code/"

	resp := e.do("GET", url, tok, nil)
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	app.frozen.Store(true)
	start := time.Now()
	resp = e.do("GET", url, tok, nil)
	took := time.Since(start)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "Bad Gateway") || !strings.Contains(body, "Failed to proxy request to application") {
		t.Fatalf("request to the vanished agent: %d %q", resp.StatusCode, body)
	}
	if took < time.Second || took > 5*time.Second {
		t.Errorf("502 after %v, want just after the 1s response timeout", took)
	}
	if n := len(e.agents.dialed()); n != 1 {
		t.Errorf("%d dials, want the pooled connection reused", n)
	}
}

// TestSlowStreamingBodyOutlivesResponseTimeout: the response timeout
// bounds the headers only; a body streamed for much longer (server-sent
// events, long downloads) arrives whole.
func TestSlowStreamingBodyOutlivesResponseTimeout(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.ResponseTimeout = 500 * time.Millisecond }).start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for i := range 6 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(400 * time.Millisecond)
		}
	})}
	go func() { _ = app.Serve(ln) }()
	t.Cleanup(func() { _ = app.Close() })
	e.agents.set(8080, ln.Addr().String())

	start := time.Now()
	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/events", e.token(pathAppRequest("code"), "http://127.0.0.1:8080"), nil)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || body != "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n" {
		t.Fatalf("stream: %d %q", resp.StatusCode, body)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("stream took %v: not longer than the response timeout, proves nothing", took)
	}
}

// TestAgentGoneDropsPooledConnections: when the coordinator reports an
// agent gone, the dialer closes its idle connections to it, so the next
// request dials afresh instead of waiting on a dead connection.
func TestAgentGoneDropsPooledConnections(t *testing.T) {
	e := newEnv(t, nil).start()
	app := newKeepAliveApp(t)
	e.agents.set(8080, app.addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	url := "http://" + testAccessHost + "/@alice/dev.main/apps/code/"
	for range 2 {
		resp := e.do("GET", url, tok, nil)
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
			t.Fatalf("request: %d %q", resp.StatusCode, body)
		}
	}
	if n := len(e.agents.dialed()); n != 1 {
		t.Fatalf("%d dials before the agent went away, want 1 (pooled)", n)
	}

	e.srv.AgentGone(testAgentID)
	select {
	case <-app.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the pooled connection to the gone agent was not closed")
	}
	resp := e.do("GET", url, tok, nil)
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("request after the agent came back: %d %q", resp.StatusCode, body)
	}
	if n := len(e.agents.dialed()); n != 2 {
		t.Errorf("%d dials, want a new one after AgentGone", n)
	}
}
