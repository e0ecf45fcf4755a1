package devagent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// ptyHarness runs a PTYServer on a loopback listener with /bin/sh and a
// fixed prompt, so output is predictable.
type ptyHarness struct {
	t    *testing.T
	srv  *PTYServer
	addr string
	done chan error
	once sync.Once
}

func newPTYHarness(t *testing.T, opts PTYOptions) *ptyHarness {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Shell == "" {
		opts.Shell = "/bin/sh"
	}
	if opts.Env == nil {
		opts.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "PS1=$ ", "ENV="}
	}
	h := &ptyHarness{t: t, srv: NewPTYServer(opts), addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { h.done <- h.srv.Serve(ln) }()
	t.Cleanup(h.close)
	return h
}

func (h *ptyHarness) close() { h.once.Do(h.closeOnce) }

func (h *ptyHarness) closeOnce() {
	_ = h.srv.Close()
	select {
	case err := <-h.done:
		if !errors.Is(err, ErrServerClosed) {
			h.t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Error("Serve did not return after Close")
	}
}

// ptyClient is a client connection with everything it has read so far.
type ptyClient struct {
	t   *testing.T
	c   net.Conn
	out chan []byte
	eof chan struct{}
	buf bytes.Buffer
}

func (h *ptyHarness) dial(f InitFrame) *ptyClient {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	b, err := AppendInitFrame(nil, f)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		h.t.Fatal(err)
	}
	pc := &ptyClient{t: h.t, c: c, out: make(chan []byte, 1024), eof: make(chan struct{})}
	go func() {
		defer close(pc.eof)
		for {
			b := make([]byte, 4096)
			n, err := c.Read(b)
			if n > 0 {
				pc.out <- b[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	h.t.Cleanup(func() { _ = c.Close() })
	return pc
}

func (pc *ptyClient) send(m ClientMessage) {
	pc.t.Helper()
	b, _ := json.Marshal(m)
	if _, err := pc.c.Write(b); err != nil {
		pc.t.Fatalf("send: %v", err)
	}
}

func (pc *ptyClient) run(line string) { pc.send(ClientMessage{Data: line + "\r"}) }

// waitFor reads until the output so far matches re, and returns the output.
func (pc *ptyClient) waitFor(re string) string {
	pc.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(10 * time.Second)
	for !rx.Match(pc.buf.Bytes()) {
		select {
		case b := <-pc.out:
			pc.buf.Write(b)
		case <-pc.eof:
			// drain what arrived before EOF
			for {
				select {
				case b := <-pc.out:
					pc.buf.Write(b)
					continue
				default:
				}
				break
			}
			if rx.Match(pc.buf.Bytes()) {
				return pc.buf.String()
			}
			pc.t.Fatalf("connection closed before %q; output:\n%q", re, pc.buf.String())
		case <-deadline:
			pc.t.Fatalf("timed out waiting for %q; output:\n%q", re, pc.buf.String())
		}
	}
	return pc.buf.String()
}

func (pc *ptyClient) waitClosed() {
	pc.t.Helper()
	select {
	case <-pc.eof:
	case <-time.After(10 * time.Second):
		pc.t.Fatalf("connection still open; output:\n%q", pc.buf.String())
	}
}

func TestPTYEchoRoundTrip(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	for _, backend := range []string{"", BackendTypeAuto, BackendTypeBuffered} {
		c := h.dial(InitFrame{ID: uuid.New(), Height: 24, Width: 80, BackendType: backend})
		c.run(`echo hel''lo; echo term=$TERM`)
		// The shell's output, not the tty's echo of the typed line.
		c.waitFor(`hello\r\nterm=xterm-256color\r\n`)
	}
}

func TestPTYSizeAndResize(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	c := h.dial(InitFrame{ID: uuid.New(), Height: 20, Width: 70})
	c.run("stty size")
	c.waitFor(`20 70\r\n`)
	c.send(ClientMessage{Height: 33, Width: 101})
	c.run("stty size")
	c.waitFor(`33 101\r\n`)
	// A message with only one dimension is not a resize.
	c.send(ClientMessage{Height: 10})
	c.run("stty size; echo done-$((1+1))")
	c.waitFor(`33 101\r\ndone-2`)

	// Zero size in the init frame means the default 24x80.
	d := h.dial(InitFrame{ID: uuid.New()})
	d.run("stty size")
	d.waitFor(`24 80\r\n`)
}

func TestPTYReconnectKeepsScreenAndShell(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	id := uuid.New()
	c := h.dial(InitFrame{ID: id, Height: 24, Width: 80})
	c.run("X=abc$((1+2)); echo before-$X pid-$$")
	out := c.waitFor(`before-abc3 pid-(\d+)\r\n`)
	pid := regexp.MustCompile(`before-abc3 pid-(\d+)`).FindStringSubmatch(out)[1]
	_ = c.c.Close()
	c.waitClosed()

	c2 := h.dial(InitFrame{ID: id, Height: 24, Width: 80})
	c2.waitFor(`before-abc3 pid-` + pid) // the old screen is replayed
	c2.run("echo after-$X pid-$$")
	c2.waitFor(`after-abc3 pid-` + pid + `\r\n`)
	if n := len(h.srv.Sessions()); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

func TestPTYSeveralClientsOneSession(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	id := uuid.New()
	a := h.dial(InitFrame{ID: id})
	a.run("echo first-$((3*3))")
	a.waitFor(`first-9\r\n`)
	b := h.dial(InitFrame{ID: id})
	b.waitFor(`first-9\r\n`)
	b.run("echo second-$((4*4))")
	a.waitFor(`second-16\r\n`)
	b.waitFor(`second-16\r\n`)
}

func TestPTYDifferentIDsAreDifferentShells(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	a := h.dial(InitFrame{ID: uuid.New()})
	a.run("X=one; echo set-$X")
	a.waitFor(`set-one\r\n`)
	b := h.dial(InitFrame{ID: uuid.New()})
	b.run("echo v-[$X]")
	b.waitFor(`v-\[\]\r\n`)
	if strings.Contains(b.buf.String(), "set-one") {
		t.Error("second session shows the first one's screen")
	}
	if n := len(h.srv.Sessions()); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
}

func TestPTYProcessExitClosesConn(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	id := uuid.New()
	a := h.dial(InitFrame{ID: id})
	b := h.dial(InitFrame{ID: id})
	a.run("echo bye-$((5+5)); exit")
	a.waitFor(`bye-10\r\n`)
	a.waitClosed()
	b.waitClosed()
	waitNoSessions(t, h.srv)

	// A command runs instead of the shell; its output arrives before close.
	c := h.dial(InitFrame{ID: uuid.New(), Command: "echo done-$((2+2))"})
	c.waitFor(`done-4`)
	c.waitClosed()

	// Even a command that exits at once never loses its output to the
	// client that started it.
	for i := range 10 {
		c := h.dial(InitFrame{ID: uuid.New(), Command: "echo quick-$((" + strconv.Itoa(i) + "+100))"})
		c.waitFor(`quick-` + strconv.Itoa(i+100))
		c.waitClosed()
	}
}

func waitNoSessions(t *testing.T, s *PTYServer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Sessions()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sessions still running: %v", s.Sessions())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPTYIdleSessionReaped(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{IdleTimeout: 300 * time.Millisecond})
	id := uuid.New()
	c := h.dial(InitFrame{ID: id})
	c.run("X=kept; echo ready")
	c.waitFor(`ready\r\n`)
	// Attached for longer than the idle timeout: not reaped.
	time.Sleep(600 * time.Millisecond)
	c.run("echo still-$X")
	c.waitFor(`still-kept\r\n`)
	_ = c.c.Close()

	waitNoSessions(t, h.srv)
	d := h.dial(InitFrame{ID: id})
	d.run("echo fresh-[$X]")
	out := d.waitFor(`fresh-\[\]\r\n`)
	if strings.Contains(out, "still-kept") {
		t.Error("a reaped session's screen came back")
	}
}

func TestPTYRefusals(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	for _, tc := range []struct {
		name string
		f    InitFrame
		want string
	}{
		{"container", InitFrame{ID: uuid.New(), Container: "c1"}, "containers are not supported"},
		{"container user", InitFrame{ID: uuid.New(), ContainerUser: "root"}, "containers are not supported"},
		{"screen backend", InitFrame{ID: uuid.New(), BackendType: "screen"}, `backend type "screen" is not supported`},
		{"unknown backend", InitFrame{ID: uuid.New(), BackendType: "tmux"}, `backend type "tmux" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(tc.f)
			c.waitFor(regexp.QuoteMeta(tc.want))
			c.waitClosed()
		})
	}
	// A garbage init frame gets a reason too.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(frame(`{"ID":"nope"}`))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(got), "devagent: bad init frame: init frame malformed") {
		t.Errorf("got %q", got)
	}
	if n := len(h.srv.Sessions()); n != 0 {
		t.Errorf("%d sessions started by refused clients", n)
	}
}

func TestPTYCloseEndsEverythingWithoutLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newPTYHarness(t, PTYOptions{})
	var clients []*ptyClient
	for range 3 {
		c := h.dial(InitFrame{ID: uuid.New()})
		c.run("echo up")
		c.waitFor(`up\r\n`)
		clients = append(clients, c)
	}
	h.close()
	for _, c := range clients {
		c.waitClosed()
		_ = c.c.Close()
	}
	if n := len(h.srv.Sessions()); n != 0 {
		t.Errorf("%d sessions after Close", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRingKeepsTheTail(t *testing.T) {
	r := newRing(8)
	r.Write([]byte("abc"))
	r.Write([]byte("defgh"))
	if got := string(r.Bytes()); got != "abcdefgh" {
		t.Fatalf("got %q", got)
	}
	r.Write([]byte("ij"))
	if got := string(r.Bytes()); got != "cdefghij" {
		t.Fatalf("got %q", got)
	}
	r.Write([]byte("0123456789"))
	if got := string(r.Bytes()); got != "23456789" {
		t.Fatalf("got %q", got)
	}
}

// manualClock fires AfterFunc callbacks only when told to.
type manualClock struct {
	mu     sync.Mutex
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	f       func()
	stopped bool
}

func (c *manualClock) AfterFunc(_ time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// fire runs every pending timer and reports how many ran.
func (c *manualClock) fire() int {
	c.mu.Lock()
	var due []*manualTimer
	for _, t := range c.timers {
		if !t.stopped {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.timers = nil
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
	return len(due)
}

func TestPTYIdleReapWithManualClock(t *testing.T) {
	clk := &manualClock{}
	h := newPTYHarness(t, PTYOptions{Clock: clk, IdleTimeout: time.Hour})
	id := uuid.New()
	c := h.dial(InitFrame{ID: id})
	c.run("echo attached")
	c.waitFor(`attached\r\n`)
	// While a client is attached no idle timer is pending.
	if n := clk.fire(); n != 0 {
		t.Fatalf("%d idle timers fired with a client attached", n)
	}
	if len(h.srv.Sessions()) != 1 {
		t.Fatal("session gone while attached")
	}
	_ = c.c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for clk.fire() == 0 { // the detach arms the timer asynchronously
		if time.Now().After(deadline) {
			t.Fatal("no idle timer armed after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitNoSessions(t, h.srv)
}

func TestPTYBackgroundJobDoesNotKeepSessionAlive(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	c := h.dial(InitFrame{ID: uuid.New()})
	// A job in its own process group keeps the terminal open after the
	// shell exits; the session must still end and close the client.
	c.run("sleep 317 & echo job-started; exit")
	c.waitFor(`job-started\r\n`)
	c.waitClosed()
	waitNoSessions(t, h.srv)
	waitNoProcess(t, "sleep 317")

	// Close does not hang on such a job either.
	d := h.dial(InitFrame{ID: uuid.New()})
	d.run("set -m; sleep 317 & echo job2-started")
	d.waitFor(`job2-started\r\n`)
	closed := make(chan struct{})
	go func() { h.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a background job")
	}
	d.waitClosed()
	waitNoProcess(t, "sleep 317")
}

// waitNoProcess waits until no process started by this test binary's
// sessions runs cmdline (space separated), so jobs do not outlive sessions.
func waitNoProcess(t *testing.T, cmdline string) {
	t.Helper()
	want := strings.ReplaceAll(cmdline, " ", "\x00") + "\x00"
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || string(b) != want {
				continue
			}
			// Only our own children's children: their session leader was
			// started by this process.
			stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
			i := bytes.LastIndexByte(stat, ')')
			f := strings.Fields(string(stat[i+1:]))
			if len(f) > 3 && isOurSession(f[3]) {
				found++
			}
		}
		if found == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %q processes outlived their session", found, cmdline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isOurSession reports whether session sid is led by a child of this
// process (live or zombie) or no longer has a leader at all.
func isOurSession(sid string) bool {
	stat, err := os.ReadFile("/proc/" + sid + "/stat")
	if err != nil {
		return true // leader gone: an orphaned job of a session we ended
	}
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	return len(f) > 1 && f[1] == strconv.Itoa(os.Getpid())
}

func TestPTYLargeInputAndOverlongMessage(t *testing.T) {
	h := newPTYHarness(t, PTYOptions{})
	id := uuid.New()
	c := h.dial(InitFrame{ID: id})
	// Many messages in one write and a large (but allowed) one are fine.
	var batch strings.Builder
	for i := range 50 {
		b, _ := json.Marshal(ClientMessage{Data: ": " + strconv.Itoa(i) + "\r"})
		batch.Write(b)
	}
	if _, err := c.c.Write([]byte(batch.String())); err != nil {
		t.Fatal(err)
	}
	c.send(ClientMessage{Data: ": " + strings.Repeat("x", 200<<10) + "\r"})
	c.run("echo big-ok-$((2*3))")
	c.waitFor(`big-ok-6\r\n`)

	// An over-long message ends that client, not the session.
	huge, _ := json.Marshal(ClientMessage{Data: strings.Repeat("y", MaxClientMessage)})
	go func() { _, _ = c.c.Write(huge) }()
	c.waitClosed()
	d := h.dial(InitFrame{ID: id})
	d.run("echo survived-$((7*7))")
	d.waitFor(`survived-49\r\n`)
}
