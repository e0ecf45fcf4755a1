package devagent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/google/uuid"
)

// PTYOptions configures a PTYServer. Zero values select the defaults.
type PTYOptions struct {
	Logger *slog.Logger
	// IdleTimeout ends a session that has had no client attached for this
	// long. Default 5 minutes.
	IdleTimeout time.Duration
	// BufferSize is how much recent output each session keeps to replay to
	// a reconnecting client. Default 64 KiB.
	BufferSize int
	// Shell runs when the init frame has no Command, and runs Command with
	// -c otherwise. Default $SHELL, else /bin/sh.
	Shell string
	// Env is the environment of new sessions; TERM=xterm-256color is
	// appended. Default os.Environ().
	Env []string
	// Dir is the working directory of new sessions. Default: inherited.
	Dir string
	// Clock schedules idle reaping. Default: the real clock.
	Clock Clock
	// WriteTimeout bounds one write of output to a client; a client that
	// cannot keep up is detached. Default 10 seconds.
	WriteTimeout time.Duration
}

// Default terminal size when the init frame carries zeros.
const (
	defaultHeight = 24
	defaultWidth  = 80
)

// PTYServer is the agent side of Coder's reconnecting PTY: every connection
// starts with an init frame naming a session ID; a new ID starts a shell in a
// pty, a known ID attaches to the running one and first receives the output
// it has kept, so the client sees the same screen again.
type PTYServer struct {
	opts PTYOptions
	log  *slog.Logger

	mu       sync.Mutex
	closed   bool
	closing  chan struct{} // closed by Close
	sessions map[uuid.UUID]*ptySession
	conns    map[net.Conn]struct{} // handshaking or attached
	wg       sync.WaitGroup
}

// NewPTYServer returns a server with opts' defaults applied.
func NewPTYServer(opts PTYOptions) *PTYServer {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = 64 << 10
	}
	if opts.Shell == "" {
		opts.Shell = os.Getenv("SHELL")
		if opts.Shell == "" {
			opts.Shell = "/bin/sh"
		}
	}
	if opts.Env == nil {
		opts.Env = os.Environ()
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	return &PTYServer{
		opts:     opts,
		log:      opts.Logger.With("component", "devagent.pty"),
		sessions: map[uuid.UUID]*ptySession{},
		conns:    map[net.Conn]struct{}{},
		closing:  make(chan struct{}),
	}
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("devagent: pty server closed")

// Serve accepts connections on ln until ln fails or the server is closed.
// It closes ln before returning.
func (s *PTYServer) Serve(ln net.Listener) error {
	defer ln.Close()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	stop := make(chan struct{})
	defer close(stop)
	s.wg.Add(1)
	go func() { // closes ln when the server closes, unblocking Accept
		defer s.wg.Done()
		select {
		case <-s.closing:
			_ = ln.Close()
		case <-stop:
		}
	}()

	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			return fmt.Errorf("devagent: pty accept: %w", err)
		}
		if !s.track(c) {
			_ = c.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *PTYServer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers c and its handler goroutine; false once closed.
func (s *PTYServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *PTYServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close ends every session and connection and waits for all goroutines.
func (s *PTYServer) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	sessions := make([]*ptySession, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.kill()
	}
	s.wg.Wait()
	return nil
}

// Sessions reports the IDs of running sessions.
func (s *PTYServer) Sessions() []uuid.UUID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	return ids
}

// refuse writes a one-line reason to c (the client shows raw output, so the
// user sees it in the terminal) and closes it.
func refuse(c net.Conn, reason string) {
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.WriteString(c, "devagent: "+reason+"\r\n")
	_ = c.Close()
}

func (s *PTYServer) handle(c net.Conn) {
	defer s.untrack(c)
	defer c.Close()
	log := s.log.With("remote", c.RemoteAddr().String())

	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	init, err := ReadInitFrame(c)
	if err != nil {
		log.Info("reconnecting pty: bad init frame", "error", err)
		refuse(c, "bad init frame: "+err.Error())
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if reason := unsupported(init); reason != "" {
		log.Info("reconnecting pty: refused", "id", init.ID, "reason", reason)
		refuse(c, reason)
		return
	}
	log = log.With("id", init.ID)

	ss, created, err := s.join(init, c, log)
	if err != nil {
		log.Warn("reconnecting pty: start failed", "error", err)
		refuse(c, "start session: "+err.Error())
		return
	}
	defer ss.detach(c)
	// Coder's agent resizes on every attach to the client's size.
	if !created && init.Height > 0 && init.Width > 0 { // new ones start at this size
		ss.resize(init.Height, init.Width)
	}
	ss.readInput(c, log)
}

func unsupported(f InitFrame) string {
	if f.Container != "" || f.ContainerUser != "" {
		return "containers are not supported by this agent"
	}
	switch f.BackendType {
	case "", BackendTypeAuto, BackendTypeBuffered:
		return ""
	default:
		return fmt.Sprintf("backend type %q is not supported (want %q)", f.BackendType, BackendTypeBuffered)
	}
}

// join attaches c to the running session for f.ID, replaying its screen,
// or starts a new session with c attached from the first byte of output.
func (s *PTYServer) join(f InitFrame, c net.Conn, log *slog.Logger) (ss *ptySession, created bool, err error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, false, ErrServerClosed
		}
		ss, ok := s.sessions[f.ID]
		if !ok {
			ss, err := s.start(f, c)
			if err == nil {
				s.sessions[f.ID] = ss
				log.Info("reconnecting pty: session started", "pid", ss.cmd.Process.Pid)
			}
			s.mu.Unlock()
			return ss, err == nil, err
		}
		s.mu.Unlock()
		// Attach outside s.mu: the replay may take a while on a slow client.
		switch err := ss.attach(c); {
		case err == nil:
			return ss, false, nil
		case errors.Is(err, errSessionEnded):
			// It ended between lookup and attach and has left the map
			// by now: start afresh under the same ID.
			continue
		default:
			return nil, false, err
		}
	}
}

// start runs the session's process with first attached; s.mu is held.
func (s *PTYServer) start(f InitFrame, first net.Conn) (*ptySession, error) {
	var cmd *exec.Cmd
	if f.Command == "" {
		cmd = exec.Command(s.opts.Shell)
	} else {
		cmd = exec.Command(s.opts.Shell, "-c", f.Command)
	}
	cmd.Env = append(append([]string{}, s.opts.Env...), "TERM=xterm-256color")
	cmd.Dir = s.opts.Dir
	h, w := f.Height, f.Width
	if h == 0 {
		h = defaultHeight
	}
	if w == 0 {
		w = defaultWidth
	}
	blocking, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: h, Cols: w})
	if err != nil {
		return nil, fmt.Errorf("devagent: start %s: %w", s.opts.Shell, err)
	}
	ptmx, err := pollableMaster(blocking)
	_ = blocking.Close()
	if err != nil {
		killGroup(cmd.Process.Pid)
		_ = cmd.Wait()
		return nil, err
	}
	ss := &ptySession{
		id:       f.ID,
		srv:      s,
		cmd:      cmd,
		ptmx:     ptmx,
		screen:   newRing(s.opts.BufferSize),
		conns:    map[net.Conn]struct{}{first: {}},
		done:     make(chan struct{}),
		readDone: make(chan struct{}),
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		ss.pump()
	}()
	go func() {
		defer s.wg.Done()
		ss.wait()
	}()
	return ss, nil
}

func (s *PTYServer) remove(ss *ptySession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
}

// ptySession is one process in a pty and the clients attached to it.
type ptySession struct {
	id   uuid.UUID
	srv  *PTYServer
	cmd  *exec.Cmd
	ptmx *os.File

	mu     sync.Mutex // guards screen, conns, ended, idle; held while writing to conns so replay and live output keep their order
	screen *ring
	conns  map[net.Conn]struct{}
	ended  bool
	idle   Timer
	done   chan struct{} // closed when the session has fully ended

	readDone chan struct{} // closed when pump returns
}

// pump copies pty output to the ring and every client until the master
// fails: every process holding the terminal has exited, or wait closed it.
func (ss *ptySession) pump() {
	defer close(ss.readDone)
	buf := make([]byte, 32<<10)
	for {
		n, err := ss.ptmx.Read(buf)
		if n > 0 {
			ss.broadcast(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// exitGrace is how long output may still drain after the session's process
// exited before the terminal is torn down regardless of other holders.
const exitGrace = 500 * time.Millisecond

// wait ends the session when its process exits: it lets the last output
// drain, hangs up whatever else still holds the terminal, and closes every
// attached client.
func (ss *ptySession) wait() {
	waitErr := ss.cmd.Wait()
	select {
	case <-ss.readDone:
	case <-time.After(exitGrace):
	}
	killGroup(ss.cmd.Process.Pid)
	_ = ss.ptmx.Close()
	<-ss.readDone
	ss.srv.remove(ss)
	ss.mu.Lock()
	ss.ended = true
	if ss.idle != nil {
		ss.idle.Stop()
	}
	for c := range ss.conns {
		_ = c.Close()
	}
	clear(ss.conns)
	ss.mu.Unlock()
	close(ss.done)
	ss.srv.log.Info("reconnecting pty: session ended", "id", ss.id, "exit", waitErr)
}

func (ss *ptySession) broadcast(p []byte) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.screen.Write(p)
	for c := range ss.conns {
		if err := ss.writeTo(c, p); err != nil {
			ss.srv.log.Debug("reconnecting pty: dropping slow or gone client", "id", ss.id, "error", err)
			_ = c.Close()
			delete(ss.conns, c)
			ss.armIdleLocked()
		}
	}
}

func (ss *ptySession) writeTo(c net.Conn, p []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(ss.srv.opts.WriteTimeout))
	_, err := c.Write(p)
	return err
}

var errSessionEnded = errors.New("devagent: session ended")

// attach replays the kept output to c and adds it to the live clients.
func (ss *ptySession) attach(c net.Conn) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return errSessionEnded
	}
	if ss.idle != nil {
		ss.idle.Stop()
		ss.idle = nil
	}
	if b := ss.screen.Bytes(); len(b) > 0 {
		if err := ss.writeTo(c, b); err != nil {
			ss.armIdleLocked()
			return fmt.Errorf("devagent: replay screen: %w", err)
		}
	}
	ss.conns[c] = struct{}{}
	return nil
}

func (ss *ptySession) detach(c net.Conn) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.conns[c]; !ok {
		return
	}
	delete(ss.conns, c)
	ss.armIdleLocked()
}

// armIdleLocked starts the idle timer if no client is attached.
func (ss *ptySession) armIdleLocked() {
	if ss.ended || len(ss.conns) > 0 || ss.idle != nil {
		return
	}
	var t Timer
	t = ss.srv.opts.Clock.AfterFunc(ss.srv.opts.IdleTimeout, func() {
		ss.mu.Lock()
		reap := ss.idle == t && len(ss.conns) == 0 && !ss.ended
		ss.mu.Unlock()
		if reap {
			ss.srv.log.Info("reconnecting pty: idle session reaped", "id", ss.id)
			ss.kill()
		}
	})
	ss.idle = t
}

// kill ends the session's process group; wait notices and cleans up.
func (ss *ptySession) kill() { killGroup(ss.cmd.Process.Pid) }

// killGroup kills everything the session's process started: its process
// group and, where /proc exists, every process of its session (pty.Start
// makes it a session leader), which catches background jobs that a shell
// with job control put in groups of their own.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, p := range sessionMembers(pid) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// sessionMembers lists the processes whose session ID is sid, from /proc.
func sessionMembers(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid pgrp session ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (ss *ptySession) resize(h, w uint16) {
	if err := setWinsize(ss.ptmx, h, w); err != nil {
		ss.srv.log.Debug("reconnecting pty: resize", "id", ss.id, "error", err)
	}
}

// ClientMessage is what a client sends after the init frame, as a stream of
// JSON objects: keystrokes in Data, a resize when Height and Width are set.
type ClientMessage struct {
	Data   string `json:"data,omitempty"`
	Height uint16 `json:"height,omitempty"`
	Width  uint16 `json:"width,omitempty"`
}

// readInput applies client messages until the client goes away or sends
// something that is not a message.
func (ss *ptySession) readInput(c net.Conn, log *slog.Logger) {
	in := &messageBound{r: c, max: MaxClientMessage}
	dec := json.NewDecoder(in)
	for {
		var m ClientMessage
		err := dec.Decode(&m)
		in.n = 0
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("reconnecting pty: client input ended", "error", err)
			}
			return
		}
		if m.Data != "" {
			if _, err := io.WriteString(ss.ptmx, m.Data); err != nil {
				return
			}
		}
		if m.Height > 0 && m.Width > 0 {
			ss.resize(m.Height, m.Width)
		}
	}
}

// MaxClientMessage bounds one JSON message from a client (a paste, say),
// so a client cannot make the agent buffer without limit.
const MaxClientMessage = 4 << 20

// errMessageTooLarge ends a client that sent an over-long message.
var errMessageTooLarge = fmt.Errorf("devagent: client message larger than %d bytes", MaxClientMessage)

// messageBound fails reads once more than max bytes have been read since n
// was last reset (after each decoded message).
type messageBound struct {
	r   io.Reader
	n   int
	max int
}

func (b *messageBound) Read(p []byte) (int, error) {
	if b.n >= b.max {
		return 0, errMessageTooLarge
	}
	if len(p) > b.max-b.n {
		p = p[:b.max-b.n]
	}
	n, err := b.r.Read(p)
	b.n += n
	return n, err
}

// ring keeps the last max bytes written to it.
type ring struct {
	max int
	b   []byte
}

func newRing(max int) *ring { return &ring{max: max, b: make([]byte, 0, max)} }

func (r *ring) Write(p []byte) {
	if len(p) >= r.max {
		r.b = append(r.b[:0], p[len(p)-r.max:]...)
		return
	}
	if over := len(r.b) + len(p) - r.max; over > 0 {
		n := copy(r.b, r.b[over:])
		r.b = r.b[:n]
	}
	r.b = append(r.b, p...)
}

// Bytes returns a copy of the kept output.
func (r *ring) Bytes() []byte { return append([]byte(nil), r.b...) }
