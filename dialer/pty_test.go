package dialer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
)

// fakePTY is a reconnecting-PTY server on loopback: it records the init
// frame, greets with "$ ", then answers every read with "got:" + bytes.
type fakePTY struct {
	inits  chan []byte
	inputs chan []byte
	closed chan struct{}
	big    int // bytes of output to send after the greeting
}

func startFakePTY(t *testing.T, big int) (*fakePTY, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePTY{inits: make(chan []byte, 4), inputs: make(chan []byte, 64), closed: make(chan struct{}, 4), big: big}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { p.closed <- struct{}{} }()
				defer c.Close()
				var hdr [2]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				body := make([]byte, binary.LittleEndian.Uint16(hdr[:]))
				if _, err := io.ReadFull(c, body); err != nil {
					return
				}
				p.inits <- append(hdr[:], body...)
				if _, err := c.Write([]byte("$ ")); err != nil {
					return
				}
				if p.big > 0 {
					if _, err := c.Write(bytes.Repeat([]byte("x"), p.big)); err != nil {
						return
					}
				}
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					p.inputs <- append([]byte(nil), buf[:n]...)
					if _, err := c.Write(append([]byte("got:"), buf[:n]...)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return p, ln.Addr().String()
}

func terminalURL(q string) string {
	return "ws://" + testAccessHost + "/api/v2/workspaceagents/" + testAgentID.String() + "/pty?" + q
}

func (e *testEnv) dialTerminal(ctx context.Context, q, origin, token string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	if token != "" {
		h.Set(edgewire.AppTokenHeader, token)
	}
	return websocket.Dial(ctx, terminalURL(q), &websocket.DialOptions{HTTPClient: e.client, HTTPHeader: h})
}

// readN reads binary messages until n bytes arrived.
func readN(ctx context.Context, t *testing.T, c *websocket.Conn, n int) []byte {
	t.Helper()
	var out []byte
	for len(out) < n {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", len(out), n, err)
		}
		if typ != websocket.MessageBinary {
			t.Fatalf("message type %v", typ)
		}
		out = append(out, b...)
	}
	return out
}

func TestTerminalBridge(t *testing.T) {
	e := newEnv(t, nil).start()
	pty, addr := startFakePTY(t, 100<<10)
	e.agents.set(ReconnectingPTYPort, addr)
	reconnect := uuid.MustParse("9f3e4567-e89b-12d3-a456-426614174999")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	q := url.Values{
		"reconnect": {reconnect.String()}, "height": {"24"}, "width": {"100"},
		"command": {"bash -l"}, "container": {"c1"}, "container_user": {"root"}, "backend_type": {"screen"},
	}
	c, _, err := e.dialTerminal(ctx, q.Encode(), "https://"+testDashboardHost, e.token(terminalRequest(testAgentID), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()

	wantBody := `{"ID":"` + reconnect.String() + `","Height":24,"Width":100,"Command":"bash -l","Container":"c1","ContainerUser":"root","BackendType":"screen"}`
	want := binary.LittleEndian.AppendUint16(nil, uint16(len(wantBody)))
	want = append(want, wantBody...)
	select {
	case got := <-pty.inits:
		if !bytes.Equal(got, want) {
			t.Fatalf("init frame\n got %q\nwant %q", got, want)
		}
	case <-ctx.Done():
		t.Fatal("no init frame")
	}
	if got := e.agents.dialed(); len(got) != 1 || got[0] != testAgentID.String()+":2" {
		t.Fatalf("dialled %v", got)
	}

	out := readN(ctx, t, c, 2+100<<10)
	if string(out[:2]) != "$ " || !bytes.Equal(out[2:], bytes.Repeat([]byte("x"), 100<<10)) {
		t.Fatalf("agent output corrupted (%d bytes)", len(out))
	}

	input := []byte(`{"data":"ls -la\r","height":30,"width":120}`)
	if err := c.Write(ctx, websocket.MessageBinary, input); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-pty.inputs:
		if !bytes.Equal(got, input) {
			t.Fatalf("agent got %q, want %q", got, input)
		}
	case <-ctx.Done():
		t.Fatal("no input at agent")
	}
	if echo := readN(ctx, t, c, 4+len(input)); string(echo) != "got:"+string(input) {
		t.Fatalf("echo %q", echo)
	}

	// The session is reported open while the terminal runs...
	sess := e.srv.Stats().pending()
	if len(sess) != 1 || !sess[0].SessionEndedAt.IsZero() || sess[0].AccessMethod != "terminal" || sess[0].SlugOrPort != "" || sess[0].Requests != 1 {
		t.Fatalf("open session: %+v", sess)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pty.closed:
	case <-ctx.Done():
		t.Fatal("agent connection not closed after the browser left")
	}
	// ...and closed afterwards (same session, end time set).
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := e.srv.Stats().pending()
		if len(s) == 1 && !s[0].SessionEndedAt.IsZero() && s[0].SessionID == sess[0].SessionID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session not closed: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTerminalRefusals(t *testing.T) {
	e := newEnv(t, nil).start()
	_, addr := startFakePTY(t, 0)
	e.agents.set(ReconnectingPTYPort, addr)
	tok := e.token(terminalRequest(testAgentID), "")
	rc := uuid.NewString()

	cases := []struct {
		name    string
		q       string
		origin  string
		token   string
		status  int
		message string
		valids  []coderhttp.ValidationError
	}{
		{name: "no token", q: "reconnect=" + rc, token: "", status: 401},
		{name: "token for another agent", q: "reconnect=" + rc, token: e.token(terminalRequest(uuid.New()), ""), status: 401},
		{name: "app token", q: "reconnect=" + rc, token: e.token(pathAppRequest("code"), "http://127.0.0.1:8080"), status: 401},
		{name: "missing reconnect", q: "height=10", token: tok, status: 400, message: "Invalid query parameters.",
			valids: []coderhttp.ValidationError{{Field: "reconnect", Detail: `Query param "reconnect" is required`}}},
		{name: "empty reconnect", q: "reconnect=", token: tok, status: 400, message: "Invalid query parameters.",
			valids: []coderhttp.ValidationError{{Field: "reconnect", Detail: `Query param "reconnect" is required and cannot be empty`}}},
		{name: "bad values", q: "reconnect=nope&height=-1&width=abc", token: tok, status: 400, message: "Invalid query parameters.",
			valids: []coderhttp.ValidationError{
				{Field: "reconnect", Detail: `Query param "reconnect" must be a valid uuid`},
				{Field: "height", Detail: `Query param "height" must be a valid positive integer (strconv.ParseUint: parsing "-1": invalid syntax)`},
				{Field: "width", Detail: `Query param "width" must be a valid positive integer (strconv.ParseUint: parsing "abc": invalid syntax)`},
			}},
		{name: "foreign origin", q: "reconnect=" + rc, origin: "https://evil.example.net", token: tok, status: 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, resp, err := e.dialTerminal(ctx, c.q, c.origin, c.token)
			if err == nil {
				conn.CloseNow()
				t.Fatal("websocket accepted")
			}
			if resp == nil || resp.StatusCode != c.status {
				t.Fatalf("resp %v, want %d (err %v)", resp, c.status, err)
			}
			if c.message == "" {
				return
			}
			var r coderhttp.Response
			body, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if r.Message != c.message || len(r.Validations) != len(c.valids) {
				t.Fatalf("got %+v", r)
			}
			for i := range c.valids {
				if r.Validations[i] != c.valids[i] {
					t.Errorf("validation %d: %+v, want %+v", i, r.Validations[i], c.valids[i])
				}
			}
		})
	}
	if d := e.agents.dialed(); len(d) != 0 {
		t.Fatalf("agent dialled for refused terminals: %v", d)
	}

	// Allowed origins: the dashboard and the proxy itself.
	for _, origin := range []string{"https://" + testDashboardHost, "https://" + testAccessHost, ""} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, _, err := e.dialTerminal(ctx, "reconnect="+rc, origin, tok)
		if err != nil {
			t.Fatalf("origin %q refused: %v", origin, err)
		}
		readN(ctx, t, conn, 2)
		conn.Close(websocket.StatusNormalClosure, "")
		cancel()
	}
}

func TestTerminalAgentUnreachable(t *testing.T) {
	e := newEnv(t, nil).start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := e.dialTerminal(ctx, "reconnect="+uuid.NewString(), "", e.token(terminalRequest(testAgentID), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusInternalError || !strings.HasPrefix(ce.Reason, "dial workspace agent: ") {
		t.Fatalf("read error %v", err)
	}
}

func TestTerminalHeartbeatClosesDeadClient(t *testing.T) {
	appSides(t, terminalHeartbeatClosesDeadClient)
}

// The bridge is let go too (shutdown would otherwise wait for it).
func terminalHeartbeatClosesDeadClient(t *testing.T, watch func(*testEnv) *testEnv) {
	e := newEnv(t, nil)
	e.srv.testPingInterval = 100 * time.Millisecond
	watch(e.start())
	pty, addr := startFakePTY(t, 0)
	e.agents.set(ReconnectingPTYPort, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A client that never reads never answers pings.
	c, _, err := e.dialTerminal(ctx, "reconnect="+uuid.NewString(), "", e.token(terminalRequest(testAgentID), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	<-pty.inits
	select {
	case <-pty.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("dead client kept the terminal open")
	}
	select {
	case <-e.srv.upgrades.drained():
	case <-time.After(5 * time.Second):
		t.Fatal("the dead terminal's bridge was never let go")
	}
}

func TestShutdownClosesTerminalCleanly(t *testing.T) {
	e := newEnv(t, nil).start()
	_, addr := startFakePTY(t, 0)
	e.agents.set(ReconnectingPTYPort, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := e.dialTerminal(ctx, "reconnect="+uuid.NewString(), "", e.token(terminalRequest(testAgentID), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readN(ctx, t, c, 2)

	start := time.Now()
	e.cancel()
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("read error %v, want close 1001", err)
	}
	select {
	case err := <-e.served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	e.cancel = nil
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	// The terminal's session was flushed on the way out.
	found := false
	for _, r := range e.stats.all() {
		if r.AccessMethod == "terminal" && !r.SessionEndedAt.IsZero() {
			found = true
		}
	}
	if !found {
		t.Fatalf("terminal session not uploaded at shutdown: %+v", e.stats.all())
	}
}

// An idle terminal holds one of the dialer's goroutines, reading the
// client, when the agent's connection says when it is readable (the
// tailnet's), and one more copying the agent's output when it cannot;
// the handler has returned, the heartbeat waits on a timer and the
// shutdown on a context callback. Output and input still pass, and
// closing the clients ends every goroutine.
func TestIdleTerminalGoroutines(t *testing.T) {
	appSides(t, idleTerminalGoroutines)
}

func idleTerminalGoroutines(t *testing.T, watch func(*testEnv) *testEnv) {
	e := watch(newEnv(t, nil).start())
	pty, addr := startFakePTY(t, 0)
	e.agents.set(ReconnectingPTYPort, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var inputBytes atomic.Int64
	go func() { // the fake agent reports each session's init, input and end
		for {
			select {
			case <-pty.inits:
			case in := <-pty.inputs:
				inputBytes.Add(int64(len(in)))
			case <-pty.closed:
			case <-ctx.Done():
				return
			}
		}
	}()
	tok := e.token(terminalRequest(testAgentID), "")
	open := func() *websocket.Conn {
		c, _, err := e.dialTerminal(ctx, "reconnect="+uuid.NewString(), "", tok)
		if err != nil {
			t.Fatal(err)
		}
		readN(ctx, t, c, 2) // the agent's prompt: the bridge runs
		return c
	}
	open().Close(websocket.StatusNormalClosure, "") // warm the transport
	goroutines := runtime.NumGoroutine()

	const sessions = 20
	var conns []*websocket.Conn
	for range sessions {
		conns = append(conns, open())
	}
	time.Sleep(100 * time.Millisecond) // let the dials' helpers end
	// The fake agent runs one goroutine per connection; the client none
	// while it does not read.
	perSession := float64(runtime.NumGoroutine()-goroutines)/sessions - 1
	want := 2.0
	if e.agents.poller != nil {
		want = 1
	}
	t.Logf("dialer goroutines per idle terminal: %.2f", perSession)
	if perSession > want+0.05 {
		t.Errorf("dialer runs %.2f goroutines per idle terminal, want %.0f", perSession, want)
	}
	input := []byte(`{"data":"x"}`)
	for _, c := range conns {
		if err := c.Write(ctx, websocket.MessageBinary, input); err != nil {
			t.Fatal(err)
		}
	}
	for want := int64(sessions * len(input)); inputBytes.Load() != want; time.Sleep(10 * time.Millisecond) {
		if ctx.Err() != nil {
			t.Fatalf("the agent got %d bytes of input, want %d", inputBytes.Load(), want)
		}
	}
	for _, c := range conns {
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	settle(t, goroutines)
}
