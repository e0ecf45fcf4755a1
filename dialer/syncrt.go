package dialer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/wsedge/wsedge/tailnet"
)

// The synchronous round trip: the common warm request (GET or HEAD, no
// body, plain HTTP) and a websocket's handshake (a GET asking to switch
// protocols) are written and their response read in the calling
// goroutine, on a connection from the agent's own small pool.
// http.Transport hands every request to a connection's read and write
// goroutines and back (channels, selects, wake-ups), a visible share of
// the dialer's CPU per request; for a handshake it also starts both
// goroutines and allocates a connection's buffers only to drop them at
// the 101. Everything else goes to the agent's http.Transport.

// maxResponseHeaderBytes bounds a response's headers, 1xx ones included,
// as http.Transport's default does.
const maxResponseHeaderBytes = 10<<20 + 4096

// errHeaderTimeout is http.Transport's error when the response timeout
// passes before the headers came, so the 502 page reads the same.
var errHeaderTimeout error = timeoutError{"net/http: timeout awaiting response headers"}

type timeoutError struct{ msg string }

func (e timeoutError) Error() string   { return e.msg }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }

// syncEligible reports whether r takes the synchronous round trip.
func syncEligible(r *http.Request) bool {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || r.URL.Scheme != "http" ||
		(r.Body != nil && r.Body != http.NoBody) || r.ContentLength != 0 ||
		len(r.TransferEncoding) != 0 || len(r.Trailer) != 0 || r.Header == nil {
		return false
	}
	// A protocol switch as httputil.ReverseProxy asks for one: a GET with
	// one Upgrade value and Connection: Upgrade. Any other use of the two
	// headers goes to http.Transport.
	up, conn := r.Header["Upgrade"], r.Header["Connection"]
	if up != nil || httpguts.HeaderValuesContainsToken(conn, "upgrade") {
		if r.Method != http.MethodGet || len(up) != 1 || up[0] == "" || len(conn) != 1 || !strings.EqualFold(conn[0], "upgrade") {
			return false
		}
	}
	// A header http.Transport refuses goes to it, which answers with
	// its own error.
	return validHeaderFields(r.Header)
}

// validHeaderFields reports whether every name and value of h is one
// net/http accepts (its server and http.Transport check the same).
func validHeaderFields(h http.Header) bool {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// agentConn is a connection of the synchronous round trip. Its reader
// counts and bounds what it reads from the connection.
type agentConn struct {
	conn net.Conn
	addr string // the request URL's host:port it was dialled for
	br   *bufio.Reader
	bw   *bufio.Writer
	// reused: it served a request before (a failure may be a stale
	// connection the app closed while it was idle).
	reused    bool
	idleSince time.Time
	readLimit int64
	nread     int64
}

// The buffers of the synchronous round trip's connections, reused once a
// connection is closed or has switched protocols; the front's (front.go)
// come from here too.
var (
	syncReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, syncBufferSize) }}
	syncWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, syncBufferSize) }}
)

// syncBufferSize is bufio's default, as http.Transport's.
const syncBufferSize = 4096

func newAgentConn(conn net.Conn, addr string) *agentConn {
	c := &agentConn{conn: conn, addr: addr}
	c.br = syncReaders.Get().(*bufio.Reader)
	c.br.Reset(c)
	c.bw = syncWriters.Get().(*bufio.Writer)
	c.bw.Reset(conn)
	return c
}

// close closes the connection and gives its buffers back: c is not used
// again (the request's context.AfterFunc only closes the connection).
func (c *agentConn) close() {
	_ = c.conn.Close()
	c.dropBuffers()
}

func (c *agentConn) dropBuffers() {
	if c.br != nil {
		c.br.Reset(nil)
		syncReaders.Put(c.br)
		c.br = nil
	}
	if c.bw != nil {
		c.bw.Reset(nil)
		syncWriters.Put(c.bw)
		c.bw = nil
	}
}

func (c *agentConn) Read(p []byte) (int, error) {
	if c.readLimit <= 0 {
		return 0, fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", maxResponseHeaderBytes)
	}
	if int64(len(p)) > c.readLimit {
		p = p[:c.readLimit]
	}
	n, err := c.conn.Read(p)
	c.readLimit -= int64(n)
	c.nread += int64(n)
	return n, err
}

// roundTripSync sends a request syncEligible accepted. A reused
// connection that fails before the first byte of the answer (the app
// closed it while idle) is replaced by a new one, once: GET and HEAD
// without a body are safe to repeat.
func (at *agentTransport) roundTripSync(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	c := at.takeIdle(req.URL.Host)
	for {
		if c == nil {
			var err error
			if c, err = at.dialSync(ctx, req.URL.Host); err != nil {
				return nil, err
			}
		}
		resp, retry, err := at.exchange(c, req)
		if err == nil || !retry {
			return resp, err
		}
		c = nil
	}
}

// dialSync opens a new connection to addr through the cache's dial.
func (at *agentTransport) dialSync(ctx context.Context, addr string) (*agentConn, error) {
	conn, err := at.cache.dialAddr(ctx, at.agentID, addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx) // as http.Transport
		}
		return nil, err
	}
	return newAgentConn(conn, addr), nil
}

// exchange writes req on c and reads the response headers. retry is set
// when c was reused and failed before the answer's first byte.
func (at *agentTransport) exchange(c *agentConn, req *http.Request) (_ *http.Response, retry bool, _ error) {
	ctx := req.Context()
	// Cancelling the request closes the connection, which ends a write
	// or read in progress.
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		c.close()
		if ctx.Err() != nil {
			return nil, false, context.Cause(ctx)
		}
		return nil, false, err
	}

	err := writeSyncRequest(c.bw, req)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		r, _, err := fail(err)
		return r, c.reused && ctx.Err() == nil, err
	}

	timeout := at.cache.responseTimeout
	if timeout > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	}
	c.nread, c.readLimit = 0, maxResponseHeaderBytes
	trace := httptrace.ContextClientTrace(ctx)
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if c.readLimit <= 0 {
				err = fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", maxResponseHeaderBytes)
			} else if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() && timeout > 0 {
				err = errHeaderTimeout
			}
			stale := c.reused && c.nread == 0 && err != errHeaderTimeout
			r, _, err := fail(err)
			return r, stale && ctx.Err() == nil, err
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			break
		}
		// 1xx informational (103 Early Hints): passed on through the
		// trace, as http.Transport does; the final response follows.
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
			c.readLimit = maxResponseHeaderBytes
		}
	}
	if resp.StatusCode == http.StatusRequestTimeout && c.reused {
		// An app may answer 408 on an idle connection before closing
		// it (http.Transport drops such a connection unseen): ask again
		// on a new one, whose answer stands.
		stop()
		c.close()
		if ctx.Err() != nil {
			return nil, false, context.Cause(ctx)
		}
		return nil, true, errors.New("dialer: idle connection answered 408")
	}
	if timeout > 0 {
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	c.readLimit = math.MaxInt64

	upgrade := req.Header["Upgrade"] != nil
	if upgrade && resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection is the body now, as http.Transport hands it
		// over: the caller owns it, the request's end no longer closes it.
		stop()
		resp.Body = newSwitchedConn(c)
		return resp, false, nil
	}
	// A connection that was asked to switch protocols is not reused.
	keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols && !upgrade
	if resp.Body == http.NoBody {
		at.release(c, stop, keep)
		return resp, false, nil
	}
	resp.Body = &syncBody{body: resp.Body, at: at, c: c, stop: stop, keep: keep, ctx: ctx}
	return resp, false, nil
}

// release ends a round trip on c: back to the pool when the exchange
// ended cleanly, neither side asked to close and the app sent nothing
// past its response (what it did send would be read as the next
// request's answer), else closed.
func (at *agentTransport) release(c *agentConn, stop func() bool, keep bool) {
	if !stop() || !keep || c.br.Buffered() > 0 {
		c.close()
		return
	}
	at.putIdle(c)
}

// syncBody is a synchronous round trip's response body: at its clean
// end the connection returns to the pool; a body closed before its end
// or failing closes it. Read and Close are called from one goroutine
// (the reverse proxy's handler).
type syncBody struct {
	body io.ReadCloser
	at   *agentTransport
	c    *agentConn
	stop func() bool
	keep bool
	ctx  context.Context
	err  error // after the end: what further reads return
}

func (b *syncBody) Read(p []byte) (int, error) {
	if b.c == nil {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.end(io.EOF, b.keep)
	case err != nil:
		if b.ctx.Err() != nil {
			err = context.Cause(b.ctx)
		}
		b.end(err, false)
	}
	return n, err
}

func (b *syncBody) Close() error {
	if b.c != nil {
		b.end(errors.New("http: read on closed response body"), false)
	}
	return nil
}

func (b *syncBody) end(err error, keep bool) {
	c := b.c
	b.c, b.err = nil, err
	b.at.release(c, b.stop, keep)
}

// takeIdle returns the most recently used idle connection to addr, or
// nil; it closes the connections idle longer than idleConnTimeout, and
// those idle longer than idleProbeAfter that have something to read.
func (at *agentTransport) takeIdle(addr string) *agentConn {
	now := at.cache.now()
	for {
		at.mu.Lock()
		expired := at.dropExpiredLocked(now.Add(-idleConnTimeout))
		var c *agentConn
		for i := len(at.idle) - 1; i >= 0; i-- {
			if at.idle[i].addr == addr {
				c = at.idle[i]
				at.idle = append(at.idle[:i], at.idle[i+1:]...)
				break
			}
		}
		at.mu.Unlock()
		closeConns(expired)
		if c == nil {
			return nil
		}
		if rc, ok := c.conn.(tailnet.ReadinessConn); ok {
			if quietNow(rc) {
				return c
			}
		} else if now.Sub(c.idleSince) < idleProbeAfter || c.quiet(at.cache.idleProbeWait) {
			return c
		}
		c.close()
	}
}

// quietNow is quiet for a connection that can be read without waiting
// (the tailnet's): exact and immediate, so every reuse is looked at.
func quietNow(rc tailnet.ReadinessConn) bool {
	var b [1]byte
	n, err := rc.ReadNow(b[:])
	return n == 0 && errors.Is(err, tailnet.ErrWouldBlock)
}

// A pooled connection is looked at before it is used: bytes an app sent
// on it unasked would be read as the next request's answer
// (http.Transport's reader goroutine per idle connection drops such a
// connection; the synchronous round trip keeps none). A tailnet
// connection is read without waiting (quietNow), at every reuse. Another
// connection (a loopback agent in tests) is read for up to idleProbeWait
// once it has been idle for idleProbeAfter: busy connections are not
// probed, so a steady load never waits; the first request after a pause
// of a second or more waits up to idleProbeWait (the runtime's timers
// are that coarse on an idle machine anyway). A read preempted for
// longer than the wait times out without looking: the connection is then
// used as before the probe.
const (
	idleProbeAfter = time.Second
	idleProbeWait  = time.Millisecond
)

// quiet reports whether c has nothing to read: no bytes, no close. A read
// whose deadline has passed does not look (gVisor's gonet, like
// net.Conn, checks the deadline first), so it waits up to wait.
func (c *agentConn) quiet(wait time.Duration) bool {
	if c.conn.SetReadDeadline(time.Now().Add(wait)) != nil {
		return false
	}
	var b [1]byte
	n, err := c.conn.Read(b[:])
	if ne, ok := errors.AsType[net.Error](err); n > 0 || !ok || !ne.Timeout() {
		return false
	}
	return c.conn.SetReadDeadline(time.Time{}) == nil
}

// putIdle pools c, or closes it when the pool is full or closed.
func (at *agentTransport) putIdle(c *agentConn) {
	now := at.cache.now()
	at.mu.Lock()
	if at.closed || len(at.idle) >= maxIdleConnsPerAgent {
		at.mu.Unlock()
		c.close()
		return
	}
	c.reused, c.idleSince = true, now
	at.idle = append(at.idle, c)
	at.mu.Unlock()
}

// dropExpiredLocked removes the connections idle since before cutoff
// (the oldest are first) and returns them to be closed.
func (at *agentTransport) dropExpiredLocked(cutoff time.Time) []*agentConn {
	n := 0
	for n < len(at.idle) && at.idle[n].idleSince.Before(cutoff) {
		n++
	}
	if n == 0 {
		return nil
	}
	expired := append([]*agentConn(nil), at.idle[:n]...)
	at.idle = append(at.idle[:0], at.idle[n:]...)
	return expired
}

// closeIdle closes the idle connections of both the pool and the
// transport; closed also makes connections in use close when they end.
func (at *agentTransport) closeIdle(closed bool) {
	at.mu.Lock()
	idle := at.idle
	at.idle = nil
	if closed {
		at.closed = true
	}
	at.mu.Unlock()
	closeConns(idle)
	at.t.CloseIdleConnections()
}

// closeExpired closes the pool's connections idle since before cutoff.
func (at *agentTransport) closeExpired(cutoff time.Time) {
	at.mu.Lock()
	expired := at.dropExpiredLocked(cutoff)
	at.mu.Unlock()
	closeConns(expired)
}

func closeConns(cs []*agentConn) {
	for _, c := range cs {
		c.close()
	}
}

// switchedConn is the body of a 101 on the synchronous round trip: the
// connection, after the bytes the app sent behind the 101's header (read
// already). Its reader and writer are dropped: a session holds nothing
// but the connection once those bytes are read.
type switchedConn struct {
	early []byte
	conn  net.Conn
}

func newSwitchedConn(c *agentConn) *switchedConn {
	s := &switchedConn{conn: c.conn}
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		s.early = bytes.Clone(b)
	}
	c.dropBuffers()
	return s
}

func (s *switchedConn) Read(p []byte) (int, error) {
	if len(s.early) > 0 {
		n := copy(p, s.early)
		s.early = s.early[n:]
		return n, nil
	}
	return s.conn.Read(p)
}

func (s *switchedConn) Write(p []byte) (int, error) { return s.conn.Write(p) }

func (s *switchedConn) Close() error { return s.conn.Close() }

// CloseWrite half-closes the connection: bridgeUpgrade passes the
// client's end of its stream on to the app.
func (s *switchedConn) CloseWrite() error {
	if cw, ok := s.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("CloseWrite: %w", errors.ErrUnsupported)
}
