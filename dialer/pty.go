package dialer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
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

	s.upgrades.add()
	defer s.upgrades.done()
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
	defer s.metrics.websockets.WithLabelValues("terminal").Dec()
	defer conn.CloseNow()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

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
	defer agentConn.Close()
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
	defer sess.End()

	s.bridgeTerminal(ctx, conn, agentConn)
}

// bridgeTerminal copies websocket message bytes to the agent stream as-is
// and agent output to binary messages, until either side ends, the
// client stops answering pings, or the server shuts down. The handler's
// goroutine copies the agent's output and one more the client's input;
// the heartbeat runs on a timer and the shutdown on a context callback,
// so an idle terminal holds two goroutines.
func (s *Server) bridgeTerminal(ctx context.Context, conn *websocket.Conn, agentConn net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wsNet := websocket.NetConn(ctx, conn, websocket.MessageBinary)

	// end closes the websocket with code, then the agent stream, which
	// ends both copies. The first caller's code is sent; the others wait
	// until its close handshake is over.
	var once sync.Once
	end := func(code websocket.StatusCode, reason string) {
		once.Do(func() {
			_ = conn.Close(code, reason)
			cancel()
			_ = agentConn.Close()
		})
	}
	stopShutdown := context.AfterFunc(s.closing, func() {
		end(websocket.StatusGoingAway, "workspace proxy is shutting down")
	})
	defer stopShutdown()
	hb := s.startHeartbeat(ctx, conn, func() {
		cancel()
		conn.CloseNow()
		_ = agentConn.Close()
	})
	defer hb.stop()

	// Not io.Copy: a terminal idles for hours, and io.Copy would hold
	// 32 KiB per direction all along.
	fromClient := make(chan struct{})
	go func() {
		defer close(fromClient)
		_, _ = copyAdaptive(agentConn, wsNet)
		end(websocket.StatusNormalClosure, "")
	}()
	_, _ = copyAdaptive(wsNet, agentConn)
	end(websocket.StatusNormalClosure, "")
	<-fromClient
	_ = wsNet.Close()
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
