package dialer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/tailnet"
)

// terminalPingInterval is how often terminals are pinged; a ping without
// a pong within the same time closes the connection.
const terminalPingInterval = 15 * time.Second

// serveTerminal bridges a web terminal websocket to the agent's
// reconnecting-PTY port (docs/protocol.md#web-terminal).
func (s *Server) serveTerminal(w http.ResponseWriter, r *http.Request, rt appurl.Route) {
	tok, err := s.appToken(r, rt)
	if err != nil {
		s.refuseToken(w, r, err)
		return
	}
	init, err := ParsePTYQuery(r.URL.Query())
	if err != nil {
		var qe *ptyQueryError
		errors.As(err, &qe)
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Invalid query parameters.", Validations: qe.Validations})
		return
	}

	// Admitted before the upgrade, so a shed terminal gets an HTTP 503;
	// the slot is given back once the agent's PTY port answers.
	release, ok := s.admitRequest(w, r, tok.AgentID)
	if !ok {
		return
	}
	defer release()

	// What ends with the terminal: run by the handler when it returns
	// before the bridge starts, else by the bridge when it is over.
	var ends sessionEnds
	defer ends.runUnlessDetached()
	s.upgrades.add()
	ends.add(s.upgrades.done)
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		CompressionMode: websocket.CompressionDisabled,
		// Terminals are opened from the dashboard and connect here.
		OriginPatterns: []string{s.dashboardURL.Host, s.accessURL.Host},
	})
	if err != nil {
		// Accept has answered (403 for a foreign origin, 4xx otherwise).
		s.log.Info("dialer: terminal websocket refused", "error", err, "origin", r.Header.Get("Origin"), "request_id", requestID(r.Context()))
		return
	}
	s.metrics.websockets.WithLabelValues("terminal").Inc()
	ends.add(func() { s.metrics.websockets.WithLabelValues("terminal").Dec() })
	ends.add(func() { _ = conn.CloseNow() })

	// The request's context ends when the handler returns, which it does
	// once the bridge runs: the terminal keeps the context's values
	// (request ID, trace) under a cancel of its own.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	ends.add(cancel)

	// The span covers setting the bridge up (agent dial, init frame), not
	// the terminal session, which may last hours.
	sctx, span := startSpan(s.tracer, ctx, spanPTYBridge)
	agentConn, err := s.transports.dial(sctx, tok.AgentID, ReconnectingPTYPort)
	release()
	if errors.Is(err, errDialsBusy) {
		endSpan(span, err)
		s.metrics.shed.WithLabelValues("dials").Inc()
		_ = conn.Close(websocket.StatusTryAgainLater, "too many terminals opening; try again")
		return
	}
	if err != nil {
		endSpan(span, err)
		_ = conn.Close(websocket.StatusInternalError, closeReason("dial workspace agent: %s", err))
		return
	}
	ends.add(func() { _ = agentConn.Close() })
	frame, err := init.AppendFrame(nil)
	if err == nil {
		_, err = agentConn.Write(frame)
	}
	endSpan(span, err)
	if err != nil {
		_ = conn.Close(websocket.StatusInternalError, closeReason("dial: %s", err))
		return
	}

	sess := s.stats.StartOpen(tok)
	ends.add(sess.End)

	ends.detached = true
	s.bridgeTerminal(ctx, conn, agentConn, ends.run)
}

// sessionEnds is what a detached session does when it is over, last
// added first, as defers would.
type sessionEnds struct {
	fs       []func()
	detached bool
}

func (e *sessionEnds) add(f func()) { e.fs = append(e.fs, f) }

func (e *sessionEnds) run() {
	for i := len(e.fs) - 1; i >= 0; i-- {
		e.fs[i]()
	}
	e.fs = nil
}

func (e *sessionEnds) runUnlessDetached() {
	if !e.detached {
		e.run()
	}
}

// bridgeTerminal copies websocket message bytes to the agent stream as-is
// and agent output to binary messages, until either side ends, the
// client stops answering pings, or the server shuts down; then it runs
// done. The handler returns once the bridge runs (its goroutine's stack,
// grown by the request's work, goes with it): one goroutine reads the
// client (coder/websocket reads in a goroutine, which also answers the
// heartbeat's pongs); the agent's output is pumped only while it flows,
// when the agent's connection says when it is readable (the tailnet's),
// else copied by a second goroutine. The heartbeat runs on a timer and
// the shutdown on a context callback, so an idle terminal holds one
// goroutine.
func (s *Server) bridgeTerminal(ctx context.Context, conn *websocket.Conn, agentConn net.Conn, done func()) {
	ctx, cancel := context.WithCancel(ctx)
	wsNet := websocket.NetConn(ctx, conn, websocket.MessageBinary)

	// end closes the websocket with code, then the agent stream, which
	// ends both copies. The first caller's code is sent; the others wait
	// until its close handshake is over.
	var once sync.Once
	// stopAgent, when the agent's output is pumped on readiness, stops
	// the watch (reporting the direction's end if no pump runs); set
	// before anything can end the bridge.
	stopAgent := func() {}
	end := func(code websocket.StatusCode, reason string) {
		once.Do(func() {
			_ = conn.Close(code, reason)
			cancel()
			_ = agentConn.Close()
		})
		stopAgent()
	}
	// The second direction to finish tears the bridge down.
	var left atomic.Int32
	left.Store(2)
	var hb *terminalHeartbeat
	var stopShutdown func() bool
	finished := func() {
		end(websocket.StatusNormalClosure, "")
		if left.Add(-1) != 0 {
			return
		}
		_ = wsNet.Close()
		hb.stop()
		stopShutdown()
		cancel()
		done()
	}
	rc, watched := agentConn.(tailnet.ReadinessConn)
	var startAgentPump func()
	if watched {
		stopAgent, startAgentPump = watchAgentOutput(rc, wsNet, finished)
	}
	stopShutdown = context.AfterFunc(s.closing, func() {
		end(websocket.StatusGoingAway, "workspace proxy is shutting down")
	})
	hb = s.startHeartbeat(ctx, conn, func() {
		cancel()
		conn.CloseNow()
		_ = agentConn.Close()
		// Not on the ping's goroutine: the bridge's end waits for the
		// ping in flight (hb.stop), and stopAgent may end the bridge.
		go stopAgent()
	})

	// Not io.Copy: a terminal idles for hours, and io.Copy would hold
	// 32 KiB per direction all along.
	go func() {
		_, _ = copyAdaptive(agentConn, wsNet)
		finished()
	}()
	if watched {
		startAgentPump()
		return
	}
	go func() {
		_, _ = copyAdaptive(wsNet, agentConn)
		finished()
	}()
}

// watchAgentOutput prepares to move the agent's output to the client
// while it flows, with no goroutine while the terminal is idle; finished
// runs once, when the agent's stream ends or fails or the client cannot
// take more. start runs the first pump (what is there already, then the
// watch is armed); stop ends the watch, and runs finished itself when no
// pump is running.
func watchAgentOutput(rc tailnet.ReadinessConn, client io.Writer, finished func()) (stop, start func()) {
	var w *appWaiter
	var finishOnce sync.Once
	finish := func() { finishOnce.Do(finished) }
	pump := func() {
		if w.drainTo(client) == nil {
			return // armed
		}
		w.stop() // the agent's end of stream, a failure, or stopped
		finish()
	}
	w = watchApp(rc, pump)
	stop = func() {
		if w.stop() {
			finish()
		}
	}
	return stop, func() { go pump() }
}

// terminalHeartbeat pings a terminal's client every ping interval from a
// timer, and calls dead when a pong does not arrive in time.
type terminalHeartbeat struct {
	s    *Server
	ctx  context.Context
	conn *websocket.Conn
	dead func()

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
	pinging sync.WaitGroup
}

func (s *Server) startHeartbeat(ctx context.Context, conn *websocket.Conn, dead func()) *terminalHeartbeat {
	h := &terminalHeartbeat{s: s, ctx: ctx, conn: conn, dead: dead}
	h.mu.Lock()
	h.t = time.AfterFunc(s.pingInterval(), h.ping)
	h.mu.Unlock()
	return h
}

func (h *terminalHeartbeat) ping() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.pinging.Add(1)
	h.mu.Unlock()
	defer h.pinging.Done()

	pctx, cancel := context.WithTimeout(h.ctx, h.s.pingInterval())
	err := h.conn.Ping(pctx)
	cancel()
	if err != nil {
		if h.ctx.Err() == nil {
			h.s.log.Info("dialer: terminal missed a heartbeat; closing", "error", err, "request_id", requestID(h.ctx))
			h.s.metrics.heartbeatClosed.Inc()
		}
		h.dead()
		return
	}
	h.mu.Lock()
	if !h.stopped {
		h.t.Reset(h.s.pingInterval())
	}
	h.mu.Unlock()
}

// stop ends the heartbeat and waits for a ping in flight.
func (h *terminalHeartbeat) stop() {
	h.mu.Lock()
	h.stopped = true
	h.t.Stop()
	h.mu.Unlock()
	h.pinging.Wait()
}

func (s *Server) pingInterval() time.Duration {
	if s.testPingInterval > 0 {
		return s.testPingInterval
	}
	return terminalPingInterval
}

// closeReason formats a websocket close reason, truncated to the 123
// bytes a close frame can carry.
func closeReason(format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	const maxLen = 123
	if len(msg) > maxLen {
		msg = msg[:maxLen-3] + "..."
	}
	return msg
}
