package dialer

// The front: the dialer's own loop for the HTTP/1.1 connections Envoy
// keeps to it. For each request net/http's server starts a goroutine
// that reads the connection in the background (to notice a client that
// goes away), wakes and stops it, and runs its response machinery; that
// was 3–4 % of the dialer's CPU per warm request (measured with
// BenchmarkWarmPathVsReference). The front serves the requests that make
// an edge's traffic — any HTTP/1.1 request in origin form, with or
// without a body, a websocket handshake among them — in the connection's
// own goroutine: it parses them with http.ReadRequest, calls the same
// handler, and writes the answer as net/http's server frames it
// (frontWriter), reading what a handler leaves of a body by net/http's
// rules (frontBody); front_test.go holds the two side by side. Any other
// request (HTTP/1.0, an Expect, h2c, a protocol switch with a body, a
// header net/http would refuse, a header block larger than the front's
// buffer) hands the connection, with the bytes read so far, to the
// net/http server for the rest of its life: net/http answers it exactly
// as it did before the front.
//
// What net/http's background read gives a handler — its context ends
// when the client goes away — the front gives a request that is still
// running after frontWatchAfter (a long poll, a stream) once its body is
// read; while a body is read, a connection that fails ends the context
// as under net/http. A warm request is over long before.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

const (
	// frontBufferSize bounds the header block the front reads itself;
	// a larger one goes to net/http (which takes up to 1 MiB). Its
	// readers are syncrt.go's.
	frontBufferSize = syncBufferSize
	// frontWatchAfter is how long a request runs at least before the
	// front watches its connection for the client going away (at most
	// sweepEvery longer).
	frontWatchAfter = 250 * time.Millisecond
	// bufferBeforeChunking is what net/http's server holds back before
	// it writes the header: an answer that ends within it gets a
	// Content-Length instead of chunks.
	bufferBeforeChunking = 2048
	// discardBodyBytes is how much of a request body a handler left
	// unread the front reads to keep the connection, as net/http's
	// server (beyond it, the connection closes after the answer).
	discardBodyBytes = 256 << 10
	// closeWriteWait is how long a connection whose client may still be
	// sending a body stays half-closed before it closes, so the client
	// reads the answer before a reset (net/http's rstAvoidanceDelay).
	closeWriteWait = 500 * time.Millisecond
)

// front accepts the dialer's connections and serves them (see above).
type front struct {
	handler http.Handler
	// srv is the net/http server connections are handed to (its
	// timeouts are the front's too) and what ServerContextKey carries.
	srv  *http.Server
	base context.Context
	ln   net.Listener
	// handoff is srv's listener: connections the front gives up.
	handoff *handoffListener

	mu    sync.Mutex
	conns map[*frontConn]struct{}
	// closing is set (under mu) when shutdown or close begins.
	closing atomic.Bool
	// active counts connections that are reading or answering a
	// request; idle ones wait for the next request's first byte.
	active sync.WaitGroup
	// sweeping: a sweep of the armed watches is coming (sweep).
	sweeping atomic.Bool
}

func newFront(ln net.Listener, srv *http.Server, base context.Context) *front {
	return &front{
		handler: srv.Handler, srv: srv, base: base, ln: ln,
		handoff: &handoffListener{addr: ln.Addr(), conns: make(chan net.Conn), closed: make(chan struct{})},
		conns:   map[*frontConn]struct{}{},
	}
}

// serve accepts connections until the listener fails or shutdown closes
// it, and returns what net/http's Serve would.
func (f *front) serve() error {
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if f.isClosing() {
				return http.ErrServerClosed
			}
			if acceptRetries(err) {
				// As net/http's Serve: back off and go on.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			_ = f.handoff.Close()
			return err
		}
		delay = 0
		fc := f.newConn(c)
		if fc == nil {
			_ = c.Close()
			continue
		}
		go fc.serve()
	}
}

// acceptRetries reports whether the listener's error is one net/http's
// Serve waits out (a temporary one: the process or the system out of
// file descriptors or buffers) rather than one that ends serving.
func acceptRetries(err error) bool {
	return isTimeout(err) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (f *front) isClosing() bool { return f.closing.Load() }

func (f *front) newConn(c net.Conn) *frontConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing.Load() {
		return nil
	}
	src := &frontSource{Conn: c}
	// Back to the pool when the connection ends or goes to net/http; a
	// handler that hijacks it takes them along.
	br, bw := syncReaders.Get().(*bufio.Reader), syncWriters.Get().(*bufio.Writer)
	br.Reset(src)
	bw.Reset(c)
	fc := &frontConn{
		f: f, c: c, src: src, br: br, bw: bw,
		remote: c.RemoteAddr().String(),
		ctx:    context.WithValue(context.WithValue(f.base, http.ServerContextKey, f.srv), http.LocalAddrContextKey, c.LocalAddr()),
	}
	f.conns[fc] = struct{}{}
	return fc
}

// shutdown stops accepting, closes idle connections and waits for the
// requests in flight (each connection closes after its answer) until
// ctx ends.
func (f *front) shutdown(ctx context.Context) error {
	f.mu.Lock()
	f.closing.Store(true)
	_ = f.ln.Close()
	for fc := range f.conns {
		if !fc.busy {
			_ = fc.c.Close()
		}
	}
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { f.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close closes every connection the front still serves.
func (f *front) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing.Store(true)
	_ = f.ln.Close()
	for fc := range f.conns {
		_ = fc.c.Close()
	}
}

// handoffListener is what net/http's server accepts from: the
// connections the front gives up.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give hands c to net/http's server, or closes it once that server is
// closed.
func (l *handoffListener) give(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

// frontSource is the connection as the front's reader reads it: a byte
// the watch read (watch) comes first. The connection's goroutine reads
// it, after the watch is over, and whoever reads a request's body while
// the handler runs (under frontBody's lock).
type frontSource struct {
	net.Conn
	pending []byte
	// failed, while a request's body is read, ends that request's
	// context when the connection fails (net/http's connReader).
	failed func()
}

func (s *frontSource) Read(p []byte) (int, error) {
	if len(s.pending) > 0 && len(p) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	n, err := s.Conn.Read(p)
	if err != nil && s.failed != nil {
		s.failed()
	}
	return n, err
}

// handedConn is a connection given to net/http with the bytes the front
// read from it first.
type handedConn struct {
	net.Conn
	src *frontSource
	// prefix is what is left of the bytes the front read (net/http's
	// first read takes them all); drained once it is empty.
	prefix  []byte
	drained atomic.Bool
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil // an upgraded session does not keep its handshake
			c.drained.Store(true)
		}
		return n, nil
	}
	return c.src.Read(p)
}

// CloseWrite half-closes the connection (an upgraded session whose app
// closed its side).
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// SyscallConn lets the dialer's readiness poller watch an upgraded
// connection, once net/http has read the bytes the front passed on.
func (c *handedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok || !c.drained.Load() || len(c.src.pending) > 0 {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// frontConn is one connection the front serves.
type frontConn struct {
	f      *front
	c      net.Conn
	src    *frontSource
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	ctx    context.Context
	// busy (under f.mu): reading or answering a request.
	busy bool
	// bufw is the answers' 2 KiB buffer (frontWriter.bufw).
	bufw *bufio.Writer
	// watch is the running request's (answer), if any; armed is set
	// while it is armed, for the sweep.
	watch *requestWatch
	armed atomic.Pointer[requestWatch]
	// hijacked: a handler took the connection (a protocol switch).
	hijacked bool
	// body is the running request's body, if it has one.
	body *frontBody
	// afterPOST: the last request was a POST (the next may begin with
	// stray line ends, which net/http skips).
	afterPOST bool
}

// setBusy marks the connection busy or idle; it reports false when the
// front is closing and an idle connection must not take a request.
func (fc *frontConn) setBusy(busy bool) bool {
	fc.f.mu.Lock()
	defer fc.f.mu.Unlock()
	if busy == fc.busy {
		return true
	}
	if busy {
		if fc.f.closing.Load() {
			return false
		}
		fc.f.active.Add(1)
	} else {
		fc.f.active.Done()
	}
	fc.busy = busy
	return true
}

func (fc *frontConn) forget() {
	fc.f.mu.Lock()
	defer fc.f.mu.Unlock()
	if fc.busy {
		fc.f.active.Done()
		fc.busy = false
	}
	delete(fc.f.conns, fc)
}

// answerWriters are the frontWriters' 2 KiB buffers (frontConn.bufw),
// one per connection while it answers.
var answerWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufferBeforeChunking) }}

// putBuffers gives the connection's buffers back to their pools; nothing
// of fc reads or writes through them afterwards.
func (fc *frontConn) putBuffers() {
	fc.br.Reset(nil)
	fc.bw.Reset(nil)
	syncReaders.Put(fc.br)
	syncWriters.Put(fc.bw)
	if fc.bufw != nil {
		fc.bufw.Reset(nil)
		answerWriters.Put(fc.bufw)
	}
	fc.br, fc.bw, fc.bufw = nil, nil, nil
}

func (fc *frontConn) serve() {
	handed := false
	defer func() {
		if fc.hijacked {
			// The connection and its buffers are the hijacker's.
			fc.forget()
			return
		}
		if !handed {
			// As net/http: what the answer left buffered goes out (a
			// handler that panicked mid-body), then the connection ends.
			_ = fc.bw.Flush()
			_ = fc.c.Close()
		}
		if fc.body != nil {
			// A goroutine of the handler's that still reads the body
			// (its read fails now) reads nothing more from the reader.
			fc.body.shut()
			fc.body = nil
		}
		fc.forget()
		fc.putBuffers()
	}()
	idle, header := fc.f.srv.IdleTimeout, fc.f.srv.ReadHeaderTimeout
	// As net/http: a new connection has the header timeout to send its
	// first request, a kept-alive one the idle timeout for the next.
	// A kept-alive one closes without an answer when fewer than four
	// bytes come before the client closes.
	wait, need := header, 1
	for {
		if wait > 0 {
			_ = fc.c.SetReadDeadline(time.Now().Add(wait))
		}
		if _, err := fc.br.Peek(need); err != nil {
			return
		}
		wait, need = idle, 4
		if !fc.setBusy(true) {
			return
		}
		if fc.afterPOST {
			// As net/http: line ends a client sent after a POST's body
			// are not the next request's.
			p, _ := fc.br.Peek(4)
			_, _ = fc.br.Discard(leadingLineEnds(p))
		}
		block, ok := fc.headerBlock(header)
		if !ok {
			return
		}
		if block == nil {
			handed = fc.handOver(nil)
			return
		}
		req, err := http.ReadRequest(fc.br)
		if err != nil || !frontTakes(req, block) {
			// net/http answers it (with its own 400 for a bad one).
			handed = fc.handOver(block)
			return
		}
		_ = fc.c.SetReadDeadline(time.Time{})
		fc.afterPOST = req.Method == http.MethodPost
		if !fc.answer(req) || fc.hijacked {
			return
		}
		if !fc.setBusy(false) {
			return
		}
	}
}

// headerBlock waits for the request's whole header block and returns it
// (still in the reader's buffer, not consumed): up to the first empty
// line, as http.ReadRequest reads it (lines may end in a bare line
// feed). A nil block with ok means the bytes are not a request the front
// reads — too large, h2c, or cut short by the client —, which net/http
// answers; !ok means the connection failed or timed out.
func (fc *frontConn) headerBlock(timeout time.Duration) (block []byte, ok bool) {
	deadlineSet := false
	for {
		b, _ := fc.br.Peek(fc.br.Buffered())
		if bytes.HasPrefix(b, []byte("PRI ")) {
			return nil, true // HTTP/2 with prior knowledge
		}
		if i := firstEmptyLine(b); i >= 0 {
			return b[:i+1], true
		}
		if len(b) == frontBufferSize {
			return nil, true
		}
		if !deadlineSet && timeout > 0 {
			_ = fc.c.SetReadDeadline(time.Now().Add(timeout))
			deadlineSet = true
		}
		if _, err := fc.br.Peek(len(b) + 1); err != nil {
			// A client that closed after part of a request gets
			// net/http's answer to that part; a slow one, none.
			return nil, !isTimeout(err) && fc.br.Buffered() > 0
		}
	}
}

// firstEmptyLine is the index of the line feed that ends the first
// empty line of b (the end of a header block), or -1.
func firstEmptyLine(b []byte) int {
	for i := 1; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if b[i-1] == '\n' {
			return i
		}
		if b[i-1] == '\r' && i >= 2 && b[i-2] == '\n' {
			return i
		}
	}
	return -1
}

// handOver gives the connection to net/http with block (the request
// read from it, if any) and whatever else the front had buffered first.
// It reports whether net/http took it.
func (fc *frontConn) handOver(block []byte) bool {
	_ = fc.c.SetReadDeadline(time.Time{})
	rest, _ := fc.br.Peek(fc.br.Buffered())
	prefix := make([]byte, 0, len(block)+len(rest))
	prefix = append(append(prefix, block...), rest...)
	hc := &handedConn{Conn: fc.c, src: fc.src, prefix: prefix}
	hc.drained.Store(len(prefix) == 0)
	fc.forget()
	fc.f.handoff.give(hc)
	return true
}

// leadingLineEnds counts the carriage returns and line feeds p begins
// with.
func leadingLineEnds(p []byte) int {
	n := 0
	for n < len(p) && (p[n] == '\r' || p[n] == '\n') {
		n++
	}
	return n
}

// frontTakes reports whether the front answers req (read from block)
// itself: an HTTP/1.1 request in origin form (not CONNECT), with one
// valid Host, no Expect, no h2c upgrade, and no body if it asks for a
// protocol switch. net/http answers the others, including every request
// it would refuse, as before.
func frontTakes(r *http.Request, block []byte) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Method == http.MethodConnect || !strings.HasPrefix(r.RequestURI, "/") {
		return false
	}
	if r.Body != http.NoBody && (r.Header["Upgrade"] != nil || httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")) {
		// Whose the bytes after the handshake are — the body's or the
		// new protocol's — is net/http's to decide.
		return false
	}
	// http.ReadRequest drops the Host header it read (into r.Host, the
	// same in origin form): the block says whether there was one.
	if r.Host == "" || !httpguts.ValidHostHeader(r.Host) || hostLines(block) != 1 {
		return false
	}
	if _, ok := r.Header["Expect"]; ok {
		return false
	}
	// HTTP/2's own upgrade is net/http's to refuse or take.
	if httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "h2c") {
		return false
	}
	return validHeaderFields(r.Header)
}

// hostLines counts the header lines of block named Host (any case).
func hostLines(block []byte) int {
	n := 0
	for i := 0; i+6 < len(block); i++ {
		if block[i] == '\n' && (block[i+1]|0x20) == 'h' && (block[i+2]|0x20) == 'o' && (block[i+3]|0x20) == 's' &&
			(block[i+4]|0x20) == 't' && block[i+5] == ':' {
			n++
		}
	}
	return n
}

// answer runs the handler for req and finishes its answer; it reports
// whether the connection serves another request.
func (fc *frontConn) answer(req *http.Request) (keep bool) {
	delete(req.Header, "Host")
	req.RemoteAddr = fc.remote
	ctx, cancel := context.WithCancel(fc.ctx)
	defer cancel()
	read := req
	req = req.WithContext(ctx)
	w := &frontWriter{fc: fc, req: req, handlerHeader: make(http.Header), contentLength: -1}
	w.cw.w = w
	if fc.bufw == nil {
		fc.bufw = answerWriters.Get().(*bufio.Writer)
	}
	fc.bufw.Reset(&w.cw)
	w.bufw = fc.bufw
	watch := &requestWatch{fc: fc, cancel: cancel}
	fc.watch = watch
	if req.Body == http.NoBody {
		// A byte already buffered is the next request: the client is
		// there.
		if fc.br.Buffered() == 0 {
			watch.arm()
		}
	} else {
		// The connection is watched once the body is read (a read of
		// the watch's would take the body's bytes); until then a read
		// that fails ends the request, as under net/http.
		body := &frontBody{rc: req.Body, remaining: req.ContentLength, closing: req.Close}
		body.atEOF = func() {
			// A chunked body puts trailers nobody announced into the
			// request ReadRequest returned (a map of its own when that
			// had none), not into this copy with its context; net/http's
			// handler sees them in its request.
			if req.Trailer == nil {
				req.Trailer = read.Trailer
			}
			if fc.br.Buffered() == 0 {
				watch.arm()
			}
		}
		fc.src.failed = cancel
		fc.body, w.body = body, body
		req.Body = body
	}
	defer func() {
		if fc.watch != nil && fc.watch.end() {
			keep = false
		}
		fc.watch = nil
		if p := recover(); p != nil {
			keep = false
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				fc.logf("http: panic serving %v: %v\n%s", fc.remote, p, buf)
			}
		}
	}()
	fc.f.handler.ServeHTTP(w, req)
	if fc.hijacked {
		return false
	}
	keep = w.finish() && !fc.f.isClosing()
	if w.body == nil {
		return keep
	}
	// As net/http's finishRequest: what is left of the body is read up
	// to discardBodyBytes (or the connection closes after the answer);
	// then nothing reads the body any more.
	_ = w.body.Close()
	fc.src.failed = nil
	fc.body = nil
	early := false
	if b, ok := w.req.Body.(*frontBody); ok {
		early = b.closedEarly()
	}
	if !keep || early {
		if w.bodyLimitHit || early {
			// The client may still be sending the body.
			_ = fc.bw.Flush()
			if cw, ok := fc.c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			time.Sleep(closeWriteWait)
		}
		return false
	}
	return true
}

// frontBody is a request body the front read the header of: the body
// http.ReadRequest gives, read as net/http's server reads a request's
// body (its unexported body with doEarlyClose). A handler that leaves
// some of it unread has up to discardBodyBytes read after it (Close, the
// answer's header); beyond that the connection closes after the answer.
// Its lock keeps the reads of a handler's goroutines and the front's in
// turn, and shut ends them before the connection's reader is reused.
type frontBody struct {
	mu sync.Mutex
	rc io.ReadCloser
	// remaining is what is left of a Content-Length body; -1 for a
	// chunked one.
	remaining int64
	// closing: the request asked to close the connection.
	closing bool
	// atEOF runs once the body is read to its end.
	atEOF              func()
	sawEOF, closed     bool
	earlyClose, isShut bool
}

func (b *frontBody) chunked() bool { return b.remaining < 0 }

func (b *frontBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *frontBody) readLocked(p []byte) (int, error) {
	if b.sawEOF {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if !b.chunked() {
		b.remaining -= int64(n)
	}
	switch {
	case err == io.EOF:
		b.sawEOF = true
		if b.atEOF != nil {
			b.atEOF()
		}
	case err != nil && b.chunked():
		// A chunked body whose trailer failed closes itself: nothing
		// more is read of it and the connection closes after the
		// answer. Its error is sticky otherwise, so a read of nothing
		// returns at once and tells the two apart.
		if _, perr := b.rc.Read(nil); perr == http.ErrBodyReadAfterClose {
			b.closed = true
		}
	}
	return n, err
}

// lockedBody reads b with its lock held.
type lockedBody struct{ b *frontBody }

func (l lockedBody) Read(p []byte) (int, error) { return l.b.readLocked(p) }

// Close ends the body as net/http's server does: a Content-Length body
// with more than discardBodyBytes left is left (the connection closes
// after the answer), another is read up to that many bytes looking for
// its end; one the client asked to close with is left as it is.
func (b *frontBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	var err error
	switch {
	case b.sawEOF || b.isShut:
	case !b.chunked() && b.closing:
	case b.remaining > discardBodyBytes:
		b.earlyClose = true
	default:
		var n int64
		n, err = io.CopyN(io.Discard, lockedBody{b}, discardBodyBytes)
		if err == io.EOF {
			err = nil
		}
		if n == discardBodyBytes {
			b.earlyClose = true
		}
	}
	b.closed = true
	return err
}

// closedEarly reports whether Close left some of the body unread.
func (b *frontBody) closedEarly() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.earlyClose
}

// shut ends the body without reading it: the connection is closed.
func (b *frontBody) shut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed, b.isShut = true, true
}

// discardForAnswer is what net/http's server does with an unread body
// when the answer's header goes out (unless the connection closes after
// it anyway): it reads up to discardBodyBytes of it, so that a client
// that sends its whole request before it reads the answer is not stuck,
// and reports whether the connection must close after the answer
// (closeAfter) and whether that is for a body too large to read
// (tooBig).
func (w *frontWriter) discardForAnswer() (closeAfter, tooBig bool) {
	discard := false
	if b, ok := w.req.Body.(*frontBody); ok {
		b.mu.Lock()
		switch {
		case b.closed:
			closeAfter = !b.sawEOF
		case b.remaining >= discardBodyBytes:
			tooBig = true
		default:
			discard = true
		}
		b.mu.Unlock()
	} else {
		discard = true
	}
	if discard {
		_, err := io.CopyN(io.Discard, w.body, discardBodyBytes+1)
		switch err {
		case nil:
			tooBig = true
		case http.ErrBodyReadAfterClose:
		case io.EOF:
			closeAfter = w.body.Close() != nil
		default:
			closeAfter = true
		}
	}
	return closeAfter || tooBig, tooBig
}

// requestWatch watches the connection of a request that still runs
// frontWatchAfter after it was armed (when the request was read, its
// body too): a client that goes away cancels the request, as net/http's
// background read does. No timer is set per request: the front's sweep
// counts the armed watches' ages in ticks (sweep).
type requestWatch struct {
	fc     *frontConn
	cancel context.CancelFunc

	mu      sync.Mutex
	armed   bool          // set by arm
	ticks   int           // sweeps that saw it armed
	over    bool          // the answer is written: do not start
	reading chan struct{} // closed when run's read returned
	gone    bool          // the client went away (read after reading is closed)
}

// arm lets the sweep start the watch, unless the answer is over. It may
// run on a goroutine of the handler's (the one that read the body's
// end).
func (rw *requestWatch) arm() {
	rw.mu.Lock()
	if rw.over || rw.armed {
		rw.mu.Unlock()
		return
	}
	rw.armed = true
	rw.fc.armed.Store(rw)
	rw.mu.Unlock()
	rw.fc.f.startSweep()
}

// tick counts a sweep; the one that finds the watch armed for
// frontWatchAfter starts it.
func (rw *requestWatch) tick() {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.over || rw.reading != nil {
		return
	}
	if rw.ticks++; rw.ticks < watchTicks {
		return
	}
	rw.reading = make(chan struct{})
	go rw.run()
}

// run reads the connection while the request is answered. A byte that
// arrives (a pipelined request) is kept for the connection's reader.
func (rw *requestWatch) run() {
	defer close(rw.reading)
	var b [1]byte
	n, err := rw.fc.c.Read(b[:])
	if n > 0 {
		rw.fc.src.pending = append(rw.fc.src.pending, b[0])
	}
	if err != nil && !isTimeout(err) {
		rw.gone = true
		rw.cancel()
	}
}

// end stops the watch once the answer is written and reports whether
// the client went away meanwhile.
func (rw *requestWatch) end() (gone bool) {
	rw.mu.Lock()
	rw.over = true
	reading := rw.reading
	rw.mu.Unlock()
	rw.fc.armed.CompareAndSwap(rw, nil)
	// tick sets reading under the lock unless over was set first: nil
	// means it never reads.
	if reading == nil {
		return false
	}
	_ = rw.fc.c.SetReadDeadline(aLongTimeAgo)
	<-reading
	_ = rw.fc.c.SetReadDeadline(time.Time{})
	return rw.gone
}

const (
	// sweepEvery is how often the front looks at the armed watches
	// while there are any; a watch starts at the watchTicks-th look, so
	// between frontWatchAfter and frontWatchAfter + sweepEvery after it
	// was armed.
	sweepEvery = frontWatchAfter / 2
	watchTicks = int(frontWatchAfter/sweepEvery) + 1
)

// startSweep makes sure a sweep is coming.
func (f *front) startSweep() {
	if f.sweeping.CompareAndSwap(false, true) {
		time.AfterFunc(sweepEvery, f.sweep)
	}
}

// sweep ticks the armed watches and comes again while there are any.
// A watch armed while it stops finds sweeping false, or is seen by its
// second look.
func (f *front) sweep() {
	watches := f.armedWatches()
	for _, rw := range watches {
		rw.tick()
	}
	if len(watches) == 0 {
		f.sweeping.Store(false)
		if len(f.armedWatches()) == 0 || !f.sweeping.CompareAndSwap(false, true) {
			return
		}
	}
	time.AfterFunc(sweepEvery, f.sweep)
}

func (f *front) armedWatches() []*requestWatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ws []*requestWatch
	for fc := range f.conns {
		if rw := fc.armed.Load(); rw != nil {
			ws = append(ws, rw)
		}
	}
	return ws
}

// aLongTimeAgo is a read deadline that ends a read at once.
var aLongTimeAgo = time.Unix(1, 0)

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

func (fc *frontConn) logf(format string, args ...any) {
	if l := fc.f.srv.ErrorLog; l != nil {
		l.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// frontWriter is the front's http.ResponseWriter. It frames the answer
// as net/http's server does (its response and chunkWriter): the handler
// writes into a 2 KiB buffer (bufw) whose fills go to the connection as
// one piece each (cw); the header — as the handler had it at
// WriteHeader, a Date unless set, a Content-Type sniffed from the body
// unless set (or encoded), a Content-Length when the handler ended
// within the first 2 KiB and set none, chunks otherwise — goes out with
// the first piece; then trailers, nothing of a body for HEAD, 1xx, 204
// and 304, and Connection: close when the connection ends after it.
type frontWriter struct {
	fc  *frontConn
	req *http.Request
	// handlerHeader is what Header returns; header is its copy taken at
	// WriteHeader, the one written.
	handlerHeader, header http.Header
	status                int
	wroteHeader           bool // WriteHeader called (a final status)
	headerOut             bool // the header is in the connection's writer
	bufw                  *bufio.Writer
	cw                    chunkWriter
	contentLength         int64 // -1: not set
	written               int64
	chunking              bool
	closeAfter            bool
	trailers              []string
	done                  bool // the handler returned
	// body is the request's body, if it has one; bodyLimitHit: more of
	// it was left than the front reads after a handler.
	body         *frontBody
	bodyLimitHit bool
	dateBuf      [len(http.TimeFormat)]byte
	// err is the connection's first write error.
	err error
}

func (w *frontWriter) Header() http.Header { return w.handlerHeader }

// Hijack hands the connection to the handler (http.Hijacker), as
// net/http does: a header already set goes out first (what the handler
// wrote of a body does not), the watch stops (a byte it read is in the
// returned reader), deadlines are cleared, and the reader holds what the
// client sent beyond the request.
func (w *frontWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	fc := w.fc
	if fc.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.done {
		panic("net/http: Hijack called after ServeHTTP finished")
	}
	if w.wroteHeader && !w.headerOut {
		w.writeHeader(nil)
	}
	if err := fc.bw.Flush(); err != nil {
		return nil, nil, err
	}
	if fc.watch != nil {
		fc.watch.end()
		fc.watch = nil
	}
	_ = fc.c.SetDeadline(time.Time{})
	if len(fc.src.pending) > 0 {
		if _, err := fc.br.Peek(fc.br.Buffered() + 1); err != nil {
			return nil, nil, err
		}
	}
	fc.hijacked = true
	return fc.c, bufio.NewReadWriter(fc.br, fc.bw), nil
}

// releaseHijacked gives the front's buffers back to their pools once the
// handler that hijacked rw's connection is done with brw, the reader and
// writer Hijack returned (it read what they held and flushed them): a
// protocol switch then keeps none of the connection's 8 KiB of buffers
// for its life, nor leaves them as garbage at every opening. rw is
// unwrapped down to the front's writer; any other writer's buffers
// (net/http's) are left alone, as is a connection whose request body
// still reads through the reader.
func releaseHijacked(rw http.ResponseWriter, brw *bufio.ReadWriter) {
	for {
		switch w := rw.(type) {
		case *frontWriter:
			fc := w.fc
			// Not buffers Hijack gave (nor ones already back), or a body
			// still reads through the reader.
			if brw.Reader != fc.br || brw.Writer != fc.bw || fc.body != nil {
				return
			}
			fc.putBuffers()
			return
		case interface{ Unwrap() http.ResponseWriter }:
			rw = w.Unwrap()
		default:
			return
		}
	}
}

func (w *frontWriter) WriteHeader(code int) {
	if w.fc.hijacked {
		w.fc.logf("http: response.WriteHeader on hijacked connection")
		return
	}
	if w.wroteHeader {
		w.fc.logf("http: superfluous response.WriteHeader call")
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational answer goes out at once, its header as the
		// handler has it now; the final one follows.
		bw := w.fc.bw
		writeStatusLine(bw, code)
		_ = w.handlerHeader.WriteSubset(bw, excludedNoBody)
		_, _ = bw.Write(crlf)
		w.noteErr(bw.Flush())
		return
	}
	w.wroteHeader, w.status = true, code
	w.header = w.handlerHeader.Clone()
	if w.header == nil {
		w.header = http.Header{}
	}
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			// As net/http: dropped from the handler's header, not from
			// the copy, so the answer is chunked (or, for HEAD, keeps it).
			w.fc.logf("http: invalid Content-Length of %q", cl)
			w.handlerHeader.Del("Content-Length")
		}
	}
}

func (w *frontWriter) Write(p []byte) (int, error) {
	if w.fc.hijacked {
		w.fc.logf("http: response.Write on hijacked connection")
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	return w.bufw.Write(p)
}

func (w *frontWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

// Flush sends what is written so far (http.Flusher).
func (w *frontWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush with its error (http.ResponseController).
func (w *frontWriter) FlushError() error {
	if w.fc.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := w.bufw.Flush()
	if !w.headerOut {
		w.writeHeader(nil)
	}
	w.noteErr(w.fc.bw.Flush())
	if err != nil {
		return err
	}
	return w.err
}

// finish ends the answer after the handler returned and reports whether
// the connection may serve another request.
func (w *frontWriter) finish() bool {
	w.done = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = w.bufw.Flush()
	if !w.headerOut {
		w.writeHeader(nil)
	}
	bw := w.fc.bw
	if w.chunking {
		_, _ = bw.WriteString("0\r\n")
		if t := w.finalTrailers(); t != nil {
			_ = t.Write(bw)
		}
		_, _ = bw.Write(crlf)
	}
	w.noteErr(bw.Flush())
	if w.err != nil || w.closeAfter {
		return false
	}
	// An answer shorter than its Content-Length leaves the client
	// waiting for the rest: only closing ends it.
	return w.contentLength == -1 || w.written == w.contentLength || w.req.Method == http.MethodHead || !bodyAllowedForStatus(w.status)
}

func (w *frontWriter) noteErr(err error) {
	if w.err == nil && err != nil {
		w.err = err
		w.closeAfter = true
	}
}

// chunkWriter takes the pieces of the body bufw lets through: the first
// brings the header out; each then goes out as it is or as one chunk.
type chunkWriter struct{ w *frontWriter }

func (cw *chunkWriter) Write(p []byte) (int, error) {
	w := cw.w
	if !w.headerOut {
		w.writeHeader(p)
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	bw := w.fc.bw
	if w.chunking {
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.Write(crlf)
	}
	_, err := bw.Write(p)
	if w.chunking && err == nil {
		_, err = bw.Write(crlf)
	}
	if err != nil {
		w.noteErr(err)
		return 0, err
	}
	return len(p), nil
}

// writeHeader writes the status line and the header, p being the
// body's first piece (sniffed for a Content-Type; its length is the
// Content-Length when the handler has returned), as net/http's
// chunkWriter.writeHeader.
func (w *frontWriter) writeHeader(p []byte) {
	done := w.done
	w.headerOut = true
	header := w.header
	isHEAD := w.req.Method == http.MethodHead
	keepAlives := !w.fc.f.isClosing()

	trailers := false
	for k := range header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			header.Del(k)
			trailers = true
		}
	}
	for _, v := range header["Trailer"] {
		trailers = true
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(textproto.TrimString(k)); k != "" && httpguts.ValidTrailerHeader(k) {
				w.trailers = append(w.trailers, k)
			}
		}
	}
	te := header.Get("Transfer-Encoding")
	hasTE := te != ""
	var setLength []byte
	if done && !trailers && !hasTE && bodyAllowedForStatus(w.status) && !hasHeader(header, "Content-Length") && (!isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		setLength = strconv.AppendInt(nil, int64(len(p)), 10)
	}
	hasCL := w.contentLength != -1
	if w.req.Close || hasToken(w.req.Header.Get("Connection"), "close") || !keepAlives || header.Get("Connection") == "close" {
		w.closeAfter = true
	}
	if w.body != nil && w.req.ContentLength != 0 && !w.closeAfter {
		var tooBig bool
		w.closeAfter, tooBig = w.discardForAnswer()
		if tooBig {
			w.bodyLimitHit = true
			header.Del("Connection")
		}
	}
	var setType, setConnection, setTE string
	if bodyAllowedForStatus(w.status) {
		_, haveType := header["Content-Type"]
		if header.Get("Content-Encoding") == "" && !haveType && !hasTE && len(p) > 0 {
			setType = http.DetectContentType(p)
		}
	} else {
		for _, k := range suppressedHeaders(w.status) {
			header.Del(k)
		}
	}
	var date []byte
	if _, ok := header["Date"]; !ok {
		date = time.Now().UTC().AppendFormat(w.dateBuf[:0], http.TimeFormat)
	}
	if hasCL && hasTE && te != "identity" {
		w.fc.logf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", te, w.contentLength)
		header.Del("Content-Length")
		hasCL = false
	}
	switch {
	case isHEAD || !bodyAllowedForStatus(w.status) || w.status == http.StatusNoContent:
		header.Del("Transfer-Encoding")
	case hasCL:
		header.Del("Transfer-Encoding")
	case hasTE && te == "identity":
		w.closeAfter = true
		header.Del("Transfer-Encoding")
	default:
		w.chunking = true
		setTE = "chunked"
		if hasTE && te == "chunked" {
			header.Del("Transfer-Encoding")
		}
	}
	if w.chunking {
		header.Del("Content-Length")
	}
	if w.closeAfter && (!keepAlives || !hasToken(header.Get("Connection"), "close")) && !isProtocolSwitch(w.status, header) {
		header.Del("Connection")
		setConnection = "close"
	}

	bw := w.fc.bw
	writeStatusLine(bw, w.status)
	_ = header.Write(bw)
	if date != nil {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(date)
		_, _ = bw.Write(crlf)
	}
	if setLength != nil {
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(setLength)
		_, _ = bw.Write(crlf)
	}
	for _, kv := range [...][2]string{{"Content-Type", setType}, {"Connection", setConnection}, {"Transfer-Encoding", setTE}} {
		if kv[1] != "" {
			_, _ = bw.WriteString(kv[0])
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(kv[1])
			_, _ = bw.Write(crlf)
		}
	}
	_, err := bw.Write(crlf)
	w.noteErr(err)
}

// finalTrailers are the trailers to send after the last chunk: the
// handler's TrailerPrefix keys and the ones it declared in Trailer.
func (w *frontWriter) finalTrailers() http.Header {
	var t http.Header
	for k, vs := range w.handlerHeader {
		if kk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = http.Header{}
			}
			t[kk] = vs
		}
	}
	for _, k := range w.trailers {
		for _, v := range w.handlerHeader[k] {
			if t == nil {
				t = http.Header{}
			}
			t.Add(k, v)
		}
	}
	return t
}

var (
	crlf           = []byte("\r\n")
	excludedNoBody = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}
)

// writeStatusLine writes the status line of code (100–999, as
// WriteHeader checks), without allocating.
func writeStatusLine(bw *bufio.Writer, code int) {
	_, _ = bw.WriteString("HTTP/1.1 ")
	writeCode(bw, code)
	_ = bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		_, _ = bw.WriteString(text)
	} else {
		_, _ = bw.WriteString("status code ")
		writeCode(bw, code)
	}
	_, _ = bw.Write(crlf)
}

func writeCode(bw *bufio.Writer, code int) {
	_ = bw.WriteByte(byte('0' + code/100))
	_ = bw.WriteByte(byte('0' + code/10%10))
	_ = bw.WriteByte(byte('0' + code%10))
}

// bodyAllowedForStatus is net/http's: no body for 1xx, 204 and 304.
func bodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199:
		return false
	case status == http.StatusNoContent, status == http.StatusNotModified:
		return false
	}
	return true
}

// suppressedHeaders are the headers net/http drops from an answer
// without a body.
func suppressedHeaders(status int) []string {
	switch {
	case status == http.StatusNotModified:
		return []string{"Content-Type", "Content-Length", "Transfer-Encoding"}
	case !bodyAllowedForStatus(status):
		return []string{"Content-Length", "Transfer-Encoding"}
	}
	return nil
}

func isProtocolSwitch(status int, h http.Header) bool {
	return status == http.StatusSwitchingProtocols && httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade")
}

// hasToken reports whether token (lower case) is in v, in any case,
// between spaces, tabs, commas or the ends, as net/http's server reads
// a Connection header ("keep-alive close" asks to close too).
func hasToken(v, token string) bool {
	boundary := func(i int) bool { return i < 0 || i >= len(v) || v[i] == ' ' || v[i] == '\t' || v[i] == ',' }
	for i := 0; i+len(token) <= len(v); i++ {
		if boundary(i-1) && boundary(i+len(token)) && strings.EqualFold(v[i:i+len(token)], token) {
			return true
		}
	}
	return false
}

func hasHeader(h http.Header, key string) bool {
	_, ok := h[key]
	return ok
}
