package dialer

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// client stops answering pings, or the server shuts down.
func (s *Server) bridgeTerminal(ctx context.Context, conn *websocket.Conn, agentConn net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wsNet := websocket.NetConn(ctx, conn, websocket.MessageBinary)

	var wg sync.WaitGroup
	done := make(chan struct{}, 2)
	copyHalf := func(dst io.Writer, src io.Reader) {
		defer wg.Done()
		// Not io.Copy: a terminal idles for hours, and io.Copy would
		// hold 32 KiB per direction all along.
		_, _ = copyAdaptive(dst, src)
		done <- struct{}{}
	}
	wg.Add(2)
	go copyHalf(agentConn, wsNet)
	go copyHalf(wsNet, agentConn)

	wg.Add(1)
	go func() {
		defer wg.Done()
		s.heartbeat(ctx, conn, cancel)
	}()

	select {
	case <-done:
		_ = conn.Close(websocket.StatusNormalClosure, "")
	case <-s.closing:
		_ = conn.Close(websocket.StatusGoingAway, "workspace proxy is shutting down")
	case <-ctx.Done():
	}
	cancel()
	_ = agentConn.Close()
	_ = wsNet.Close()
	wg.Wait()
}

// heartbeat pings the client every terminalPingInterval and closes the
// connection when a pong does not arrive in time.
func (s *Server) heartbeat(ctx context.Context, conn *websocket.Conn, cancel context.CancelFunc) {
	t := time.NewTicker(s.pingInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, s.pingInterval())
		err := conn.Ping(pctx)
		pcancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Info("dialer: terminal missed a heartbeat; closing", "error", err, "request_id", requestID(ctx))
				s.metrics.heartbeatClosed.Inc()
			}
			cancel()
			conn.CloseNow()
			return
		}
	}
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
