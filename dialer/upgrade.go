package dialer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// idleCopyBuffer is what each direction of an upgraded connection holds
// while it waits for bytes. A proxied websocket spends most of its life
// idle, blocked in a read: io.Copy would hold 32 KiB per direction for
// the whole session; typical frames (keystrokes, terminal lines, pings)
// fit in this.
const idleCopyBuffer = 1 << 10

// errInvalidWrite: a Write returned an impossible count (as io.Copy's).
var errInvalidWrite = errors.New("invalid write result")

// copyAdaptive copies src to dst until EOF (then returns a nil error) or
// an error, like io.Copy, without consulting io.WriterTo or io.ReaderFrom.
// It reads into a small buffer; when a read fills it, more is likely
// queued, so it borrows a pooled 32 KiB buffer for the following reads
// and gives it back after the first read that does not fill that one. An
// idle stream therefore blocks holding only the small buffer, and a bulk
// transfer still moves 32 KiB per read.
func copyAdaptive(dst io.Writer, src io.Reader) (written int64, err error) {
	small := make([]byte, idleCopyBuffer)
	var big []byte
	defer func() {
		if big != nil {
			proxyBuffers.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = big
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			if nw < 0 || nr < nw {
				nw = 0
				if werr == nil {
					werr = errInvalidWrite
				}
			}
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			if nr != nw {
				return written, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			return written, rerr
		}
		switch {
		case big == nil && nr == len(small):
			big = proxyBuffers.Get()
		case big != nil && nr < len(big):
			proxyBuffers.Put(big)
			big = nil
		}
	}
}

// errUpgradeBridged ends httputil.ReverseProxy's handling of a 101 that
// bridgeUpgrade took over (returned through ModifyResponse, so the
// proxy's ErrorHandler sees it and must stay silent).
var errUpgradeBridged = errors.New("upgraded connection bridged")

// errNoCloseWrite ends a session whose reader reached EOF but whose
// other side cannot be half-closed, as httputil does.
var errNoCloseWrite = errors.New("connection cannot half-close")

// upgradeHandoff is how serveApp lets an upgraded session outlive its
// handler.
type upgradeHandoff struct {
	// cut ends detached sessions (the server's hard shutdown); nil when
	// the handler is not run by Serve: the session then stays on the
	// handler's goroutine.
	cut context.Context
	// poller watches the client connections of detached sessions (nil:
	// each session reads its client with a goroutine of its own).
	poller *readinessPoller
	// end is what the handler does when the session is over.
	end func()
	// detached: a goroutine of the session calls end. Set and read on
	// the handler's goroutine only.
	detached bool
}

// handlerDone is deferred by the handler.
func (h *upgradeHandoff) handlerDone() {
	if !h.detached {
		h.end()
	}
}

// cutKey carries the context whose end cuts detached upgraded sessions.
type cutKey struct{}

func cutContext(ctx context.Context) context.Context {
	c, _ := ctx.Value(cutKey{}).(context.Context)
	return c
}

// pollerKey carries the server's readinessPoller.
type pollerKey struct{}

func pollerOf(ctx context.Context) *readinessPoller {
	p, _ := ctx.Value(pollerKey{}).(*readinessPoller)
	return p
}

// bridgeUpgrade does with a 101 from the app what httputil.ReverseProxy
// would — check the protocol, hijack the client connection, send the
// 101's header, copy both ways until both are done or one fails — with
// less held per idle session: the handler returns once the 101 is sent
// (with it go its goroutine's stack, grown by the request's work, and
// the HTTP server's per-connection state and buffers), the client → app
// direction runs only while the client sends (the server's
// readinessPoller tells when; without one, a second goroutine copies),
// the app → client direction likewise when the app's connection says
// when it is readable (the tailnet's: startWatched), else one goroutine
// of the session copies it with copyAdaptive, and h.cut closes the
// connections through context.AfterFunc instead of a watcher goroutine.
// Bytes the client sent before the 101 (already buffered by the server)
// go to the app first; httputil would drop them. head, if not nil, sees
// the 101's header last, before it is written (the app response policy:
// the 101 never passes through WriteHeader). Once the client
// connection is hijacked the error returned wraps errUpgradeBridged;
// before, it is the proxy's error for a bad switch (a 502 page).
func bridgeUpgrade(rw http.ResponseWriter, res *http.Response, h *upgradeHandoff, head func(http.Header)) error {
	req := res.Request
	reqUp, resUp := upgradeType(req.Header), upgradeType(res.Header)
	if !isPrintable(resUp) {
		return fmt.Errorf("backend tried to switch to invalid protocol %q", resUp)
	}
	if !strings.EqualFold(reqUp, resUp) {
		return fmt.Errorf("backend tried to switch protocol %q when %q was requested", resUp, reqUp)
	}
	appConn, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		return errors.New("internal error: 101 switching protocols response with non-writable body")
	}
	conn, brw, err := http.NewResponseController(rw).Hijack()
	if errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("can't switch protocols using non-Hijacker ResponseWriter type %T", rw)
	}
	if err != nil {
		return fmt.Errorf("hijack failed on protocol switch: %w", err)
	}

	hdr := rw.Header()
	for k, vs := range res.Header {
		for _, v := range vs {
			hdr.Add(k, v)
		}
	}
	if head != nil {
		head(hdr)
	}
	resp := *res
	resp.Header, resp.Body = hdr, nil // only the header: the body is appConn
	err = resp.Write(brw)
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("%w: response: %w", errUpgradeBridged, err)
	}

	b := &upgradedSession{client: conn, app: appConn}
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		b.early = bytes.Clone(early) // not the server's 4 KiB reader
	}
	releaseHijacked(rw, brw)
	if h.cut == nil {
		return b.run(req.Context(), nil)
	}
	res.Body = http.NoBody // the proxy closes it on our error; the session owns appConn
	h.detached = true
	closed, end := upgradeGC.sessionOpened(), h.end
	h.end = func() { closed(); end() }
	if b.startWatched(h.cut, h.poller, h.end) {
		return errUpgradeBridged
	}
	go func() {
		defer h.end()
		_ = b.run(h.cut, h.poller)
	}()
	return errUpgradeBridged
}

// upgradedSession is the two connections of a protocol switch.
type upgradedSession struct {
	client net.Conn
	// early is what the client sent before the hijack (the HTTP server
	// had read it already): it goes to the app first.
	early []byte
	app   io.ReadWriteCloser
}

// errSessionCut ends a direction of a session that the other direction's
// failure, or the server's hard shutdown, ended.
var errSessionCut = errors.New("upgraded session cut")

// run copies both ways until both directions are done or one fails, or
// ctx ends; then both connections are closed. The calling goroutine
// copies app → client. The client → app direction is pumped by
// pumpFromClient when poller says the client sent something, or copied
// by one more goroutine without a poller (or for a client connection it
// cannot poll).
func (b *upgradedSession) run(ctx context.Context, poller *readinessPoller) error {
	toApp := make(chan error, 1)
	var once sync.Once
	finish := func(err error) { once.Do(func() { toApp <- err }) }
	var w *readinessWaiter
	end := func() {
		if w != nil && w.stop() {
			finish(errSessionCut) // no pump is running to report it
		}
		_ = b.client.Close()
		_ = b.app.Close()
	}
	w = poller.watch(b.client, func() { b.pumpFromClient(w, finish, end) })
	defer end()
	stop := context.AfterFunc(ctx, end)
	defer stop()
	if w != nil {
		go b.pumpFromClient(w, finish, end)
	} else {
		go func() {
			err := copyThenCloseWrite(b.app, io.MultiReader(bytes.NewReader(b.early), b.client))
			if err != nil {
				end() // the other direction's read returns
			}
			finish(err)
		}()
	}
	err := copyThenCloseWrite(b.client, b.app)
	if err != nil {
		end()
	}
	if err2 := <-toApp; err == nil {
		err = err2
	}
	if err == nil {
		return errUpgradeBridged
	}
	return fmt.Errorf("%w: %w", errUpgradeBridged, err)
}

// pumpFromClient moves what the client sent to the app until the client
// connection has nothing more to read, then arms w and returns: the
// client → app direction of an idle session holds no goroutine and no
// buffer. It runs for one readiness event at a time (w is one-shot).
// finish reports the direction's end: the client's EOF (passed on as a
// half-close) or an error (which ends the session).
func (b *upgradedSession) pumpFromClient(w *readinessWaiter, finish func(error), end func()) {
	fail := func(err error) {
		end()
		finish(err)
	}
	if early := b.early; len(early) > 0 {
		b.early = nil
		if _, err := b.app.Write(early); err != nil {
			fail(err)
			return
		}
	}
	buf := proxyBuffers.Get()
	for {
		n, err := readNow(w.rc, buf)
		if n > 0 {
			if _, werr := b.app.Write(buf[:n]); werr != nil {
				proxyBuffers.Put(buf)
				fail(werr)
				return
			}
			continue
		}
		proxyBuffers.Put(buf)
		switch {
		case wouldBlock(err):
			if err := w.arm(); err != nil {
				fail(err)
			}
		case err != nil:
			fail(err)
		default: // EOF
			w.stop()
			if err := closeWrite(b.app); err != nil {
				fail(err)
				return
			}
			finish(nil)
		}
		return
	}
}

// copyThenCloseWrite copies src to dst and, once src ends, half-closes
// dst so its peer sees the end too.
func copyThenCloseWrite(dst io.Writer, src io.Reader) error {
	if _, err := copyAdaptive(dst, src); err != nil {
		return err
	}
	return closeWrite(dst)
}

// closeWrite half-closes c, or fails if it cannot.
func closeWrite(c any) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoCloseWrite
}

// upgradeType is the protocol a header asks to switch to, "" if none.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
