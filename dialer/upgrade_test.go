package dialer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/wsedge/wsedge/edgewire"
)

// rawUpgradeApp is an app that switches to a byte-echo protocol: it
// echoes what it reads, and on EOF writes "bye" and closes.
func rawUpgradeApp(t testing.TB) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		buf := make([]byte, 512)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				_, _ = io.WriteString(c, "bye")
				return
			}
		}
	}))
	t.Cleanup(app.Close)
	return app
}

// openRawUpgrade sends an upgrade request to addr, followed at once by
// early (before any answer), and returns the connection after the 101's
// headers with a reader positioned at the first switched byte.
func openRawUpgrade(t testing.TB, addr, token string, early []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	req := fmt.Sprintf("GET /@alice/dev.main/apps/code/ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n%s: %s\r\n\r\n%s",
		testAccessHost, edgewire.AppTokenHeader, token, early)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReaderSize(c, 16)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101 ") {
		t.Fatalf("status line %q: %v", line, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			return c, br
		}
	}
}

// openPinged opens an upgraded session with openRawUpgrade and checks a
// "ping" comes back through it.
func openPinged(t testing.TB, addr, token string) net.Conn {
	t.Helper()
	c, br := openRawUpgrade(t, addr, token, nil)
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	return c
}

// TestUpgradedConnectionBytes: bytes cross a proxied protocol switch in
// both directions unchanged — including what the client sent before the
// 101 arrived, transfers far larger than the copy buffers, and the
// client's half-close, after which the app still gets to answer.
// Served by Serve, a session outlives its handler; served by Handler
// alone, it stays on the handler.
func TestUpgradedConnectionBytes(t *testing.T) {
	t.Run("Serve", func(t *testing.T) {
		e := newEnv(t, nil).start()
		upgradedConnectionBytes(t, e, e.addr)
	})
	t.Run("Handler", func(t *testing.T) {
		e := newEnv(t, nil)
		srv := httptest.NewServer(e.srv.Handler())
		t.Cleanup(srv.Close)
		upgradedConnectionBytes(t, e, srv.Listener.Addr().String())
	})
	t.Run("Serve, app readiness", func(t *testing.T) {
		e := newEnv(t, nil).start().watchAppReadiness(t)
		upgradedConnectionBytes(t, e, e.addr)
	})
}

// appSides runs f with agent connections read by a waiting goroutine
// and with agent connections that say when they are readable (the
// tailnet's), on which idle sessions hold no goroutine.
func appSides(t *testing.T, f func(t *testing.T, watch func(*testEnv) *testEnv)) {
	t.Run("app goroutine", func(t *testing.T) { f(t, func(e *testEnv) *testEnv { return e }) })
	t.Run("app readiness", func(t *testing.T) { f(t, func(e *testEnv) *testEnv { return e.watchAppReadiness(t) }) })
}

func upgradedConnectionBytes(t *testing.T, e *testEnv, addr string) {
	app := rawUpgradeApp(t)
	port := appPort(t, app)
	e.agents.set(port, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))

	c, br := openRawUpgrade(t, addr, tok, []byte("early"))
	defer c.Close()
	got := make([]byte, len("early"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "early" {
		t.Fatalf("bytes sent with the upgrade request: got %q, %v", got, err)
	}

	for _, size := range []int{1, idleCopyBuffer - 1, idleCopyBuffer, idleCopyBuffer + 1, 100 << 10, 1 << 20} {
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = byte(i*7 + size)
		}
		werr := make(chan error, 1)
		go func() { _, err := c.Write(msg); werr <- err }()
		echo := make([]byte, size)
		if _, err := io.ReadFull(br, echo); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(echo, msg) {
			t.Fatalf("%d bytes came back different", size)
		}
	}

	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after half-close: %q, %v", rest, err)
	}
}

// TestIdleUpgradedConnectionMemory: an open, idle websocket costs the
// dialer little memory. httputil.ReverseProxy held a 32 KiB io.Copy
// buffer per direction, four goroutines (their stacks, the handler's
// grown by the request's work) and the HTTP server's per-connection
// state for the whole session: over 100 KiB in all. Now one goroutine
// waits for the app with a 1 KiB buffer; nothing waits for the client
// but the server's readiness poller.
func TestIdleUpgradedConnectionMemory(t *testing.T) {
	t.Run("app goroutine", func(t *testing.T) { idleUpgradedConnectionMemory(t, false) })
	t.Run("app readiness", func(t *testing.T) { idleUpgradedConnectionMemory(t, true) })
}

func idleUpgradedConnectionMemory(t *testing.T, watched bool) {
	e := newEnv(t, nil).start()
	if watched {
		e.watchAppReadiness(t)
	}
	app := rawUpgradeApp(t)
	port := appPort(t, app)
	e.agents.set(port, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))

	const sessions = 200
	goroutines := steadyGoroutines(t)
	type cost struct{ heap, stack, goroutines, alloc float64 }
	// perSession opens sessions to addr, each echoing one message, and
	// measures the live heap, stacks and goroutines they add.
	perSession := func(addr string) cost {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
			settle(t, goroutines)
		}()
		var before, after runtime.MemStats
		// Twice: the first GC moves what sync.Pools hold (copy buffers
		// pumps gave back, shared by all sessions) to their victim
		// caches, the second frees it.
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&before)
		g := steadyGoroutines(t)
		for range sessions {
			conns = append(conns, openPinged(t, addr, tok))
		}
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		return cost{
			heap:       (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / sessions,
			stack:      (float64(after.StackInuse) - float64(before.StackInuse)) / sessions,
			goroutines: float64(runtime.NumGoroutine()-g) / sessions,
			alloc:      (float64(after.TotalAlloc) - float64(before.TotalAlloc)) / sessions,
		}
	}
	// Warm both paths (pools, the agent transport, the token cache).
	perSession(e.addr)
	direct := perSession(app.Listener.Addr().String())
	proxied := perSession(e.addr)
	heap, stack, gs := proxied.heap-direct.heap, proxied.stack-direct.stack, proxied.goroutines-direct.goroutines
	alloc := proxied.alloc - direct.alloc
	t.Logf("dialer per idle upgraded connection: heap %.0f B, stacks %.0f B, %.2f goroutines, %.0f B allocated to open it (client and app: %+v)", heap, stack, gs, alloc, direct)
	// One goroutine waits for the app, unless its connection says when
	// it is readable; the client is watched by the server's readiness
	// poller (Linux), or read by a second goroutine.
	want := 2.0
	if runtime.GOOS == "linux" {
		want = 1
		if watched {
			want = 0
		}
	}
	if gs > want+0.05 {
		t.Errorf("dialer runs %.2f goroutines per idle upgraded connection, want %.0f", gs, want)
	}
	// Stacks vary with the runtime's adaptive starting size: leave room.
	limit := 24 << 10
	if watched {
		limit = 8 << 10 // no goroutine: a few small structures
	}
	if heap+stack > float64(limit) {
		t.Errorf("dialer holds %.0f B (heap %.0f, stacks %.0f) per idle upgraded connection, want ≤ %d", heap+stack, heap, stack, limit)
	}
	// What opening one allocates stays garbage until a cycle (however
	// many open at once: see sessionCollector), so it shows in the
	// dialer's RSS during a burst of reconnections. About 12 KB: the
	// request, its copy for the app, the 101, contexts; the connection's
	// buffers (Envoy's: 4 KiB to read, 4 to write, 2 for answers; the
	// app's) go back to their pools once the 101 is out.
	if !raceEnabled && alloc > 14<<10 {
		t.Errorf("opening an upgraded connection allocates %.0f B in the dialer, want ≤ %d", alloc, 14<<10)
	}
}

// steadyGoroutines is the goroutine count once it has held still for a
// while: a count taken while an earlier test's servers still wind down
// would make their exits look like sessions that hold no goroutine.
func steadyGoroutines(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	n := runtime.NumGoroutine()
	for still := 0; still < 10 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if m := runtime.NumGoroutine(); m != n {
			n, still = m, 0
		} else {
			still++
		}
	}
	return n
}

// settle waits for closed sessions' goroutines to end.
func settle(t testing.TB, goroutines int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines+5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left, started with %d", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scriptedReader returns its chunks one read at a time, recording the
// size of the buffer each read was offered.
type scriptedReader struct {
	chunks  [][]byte
	offered []int
}

func (r *scriptedReader) Read(p []byte) (int, error) {
	r.offered = append(r.offered, len(p))
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if n < len(r.chunks[0]) {
		r.chunks[0] = r.chunks[0][n:]
	} else {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// TestCopyAdaptiveBuffers: reads use the small buffer until one fills it,
// then 32 KiB until a read comes up short; so the read that waits after a
// burst (here the final one) holds only the small buffer.
func TestCopyAdaptiveBuffers(t *testing.T) {
	big := len(proxyBuffers.Get())
	r := &scriptedReader{chunks: [][]byte{
		bytes.Repeat([]byte("a"), 10),
		bytes.Repeat([]byte("b"), idleCopyBuffer),
		bytes.Repeat([]byte("c"), 3*big),
		bytes.Repeat([]byte("d"), 100),
		bytes.Repeat([]byte("e"), idleCopyBuffer+5),
	}}
	var want bytes.Buffer
	for _, c := range r.chunks {
		want.Write(c)
	}
	var out bytes.Buffer
	n, err := copyAdaptive(&out, r)
	if err != nil || n != int64(want.Len()) || !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatalf("copied %d, %v; equal %v", n, err, bytes.Equal(out.Bytes(), want.Bytes()))
	}
	s, b := idleCopyBuffer, big
	wantOffered := []int{s, s, b, b, b, b, s, b, s}
	if fmt.Sprint(r.offered) != fmt.Sprint(wantOffered) {
		t.Fatalf("read buffer sizes %v, want %v", r.offered, wantOffered)
	}
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

func TestCopyAdaptiveErrors(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 3*idleCopyBuffer)
	for name, r := range map[string]io.Reader{
		"one byte": iotest.OneByteReader(bytes.NewReader(data)),
		"half":     iotest.HalfReader(bytes.NewReader(data)),
		"data+EOF": iotest.DataErrReader(bytes.NewReader(data)),
		"timeout":  iotest.TimeoutReader(bytes.NewReader(data)),
	} {
		var out bytes.Buffer
		n, err := copyAdaptive(&out, r)
		if name == "timeout" {
			if !errors.Is(err, iotest.ErrTimeout) {
				t.Errorf("%s: error %v, want the reader's", name, err)
			}
			continue
		}
		if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
			t.Errorf("%s: copied %d, %v", name, n, err)
		}
	}
	if _, err := copyAdaptive(shortWriter{}, bytes.NewReader(data)); !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("short write: %v", err)
	}
}

// TestUpgradedSessionsManyBursts: many sessions at once, each sending
// bursts of different sizes with idle gaps between them, get every byte
// back in order: between bursts each session's client side waits in the
// readiness poller, and no burst is lost or stuck there.
func TestUpgradedSessionsManyBursts(t *testing.T) {
	appSides(t, upgradedSessionsManyBursts)
}

func upgradedSessionsManyBursts(t *testing.T, watch func(*testEnv) *testEnv) {
	e := watch(newEnv(t, nil).start())
	app := rawUpgradeApp(t)
	port := appPort(t, app)
	e.agents.set(port, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))

	const sessions, bursts = 16, 40
	errs := make(chan error, sessions)
	for i := range sessions {
		c, br := openRawUpgrade(t, e.addr, tok, nil)
		go func() {
			defer c.Close()
			for j := range bursts {
				msg := bytes.Repeat([]byte{byte('a' + (i+j)%26)}, 1+(i*131+j*977)%(3*idleCopyBuffer))
				if _, err := c.Write(msg); err != nil {
					errs <- fmt.Errorf("session %d burst %d: %w", i, j, err)
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("session %d burst %d: %d bytes back different (%v)", i, j, len(msg), err)
					return
				}
				time.Sleep(time.Duration(j%3) * time.Millisecond)
			}
			errs <- nil
		}()
	}
	for range sessions {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestUpgradedSessionEndsWhenAppGoes: when the app ends a session while
// the client is idle, the client is told and the dialer lets the session
// go (the handler's accounting runs: Shutdown would otherwise wait for
// it). An app that closes cleanly leaves the client's side open until
// the client closes it, as a half-close should; an app that resets the
// connection ends the session at once, with nothing read from the client.
func TestUpgradedSessionEndsWhenAppGoes(t *testing.T) {
	appSides(t, upgradedSessionEndsWhenAppGoes)
}

func upgradedSessionEndsWhenAppGoes(t *testing.T, watch func(*testEnv) *testEnv) {
	for _, reset := range []bool{false, true} {
		name := "close"
		if reset {
			name = "reset"
		}
		t.Run(name, func(t *testing.T) {
			e := watch(newEnv(t, nil).start())
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello")
				time.Sleep(50 * time.Millisecond)
				if reset {
					_ = c.(*net.TCPConn).SetLinger(0)
				}
				_ = c.Close()
			}))
			t.Cleanup(app.Close)
			port := appPort(t, app)
			e.agents.set(port, app.Listener.Addr().String())
			tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))

			c, br := openRawUpgrade(t, e.addr, tok, nil)
			defer c.Close()
			rest, err := io.ReadAll(br)
			if !reset && (err != nil || string(rest) != "hello") {
				t.Fatalf("after the app closed: %q, %v; want hello and EOF", rest, err)
			}
			if !reset {
				select {
				case <-e.srv.upgrades.drained():
					t.Fatal("session ended while the client's side was still open")
				case <-time.After(100 * time.Millisecond):
				}
				_ = c.Close()
			}
			select {
			case <-e.srv.upgrades.drained():
			case <-time.After(5 * time.Second):
				t.Fatal("the session was never let go")
			}
		})
	}
}
