package devcoord

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/hashicorp/yamux"
	"github.com/wsedge/wsedge/coderhttp"
)

// checkVersion writes coderd's 400 for a bad ?version= and reports whether
// the request may go on. def is assumed when the parameter is absent.
func checkVersion(w http.ResponseWriter, r *http.Request, def string) bool {
	v := r.URL.Query().Get("version")
	if v == "" {
		v = def
	}
	if err := validateVersion(v); err != nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{
			Message:     "Unknown or unsupported API version",
			Validations: []coderhttp.ValidationError{{Field: "version", Detail: err.Error()}},
		})
		return false
	}
	return true
}

// ServeProxy serves /api/v2/workspaceproxies/me/coordinate for a proxy the
// caller has already authenticated. As in coderd, a missing version means
// 1.0, which is refused; the proxy gets a fresh peer ID for this connection
// and may tunnel to any agent.
func (c *Coordinator) ServeProxy(w http.ResponseWriter, r *http.Request, proxyID uuid.UUID) {
	if !checkVersion(w, r, "1.0") {
		return
	}
	peerID := uuid.New()
	c.serve(w, r, identity{id: peerID, name: peerID.String(), kind: "proxy", auth: proxyAuth{}},
		slog.String("proxy_id", proxyID.String()))
}

// ServeAgent serves the tailnet part of /api/v2/workspaceagents/me/rpc for an
// authenticated agent. A missing version means 2.0 (as coderd's agent
// endpoint assumes); the agent's peer ID is its agent ID.
func (c *Coordinator) ServeAgent(w http.ResponseWriter, r *http.Request, agentID uuid.UUID) {
	if !checkVersion(w, r, "2.0") {
		return
	}
	c.serve(w, r, identity{id: agentID, name: agentID.String(), kind: "agent", auth: agentAuth{id: agentID}},
		slog.String("agent_id", agentID.String()))
}

func (c *Coordinator) serve(w http.ResponseWriter, r *http.Request, who identity, attr slog.Attr) {
	log := c.log.With(attr, "peer_id", who.id)
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.conns.Add(1)
	}
	c.mu.Unlock()
	if closed {
		coderhttp.WriteJSON(w, http.StatusServiceUnavailable, coderhttp.Response{Message: "Coordinator is shutting down."})
		return
	}
	defer c.conns.Done()

	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		// Accept has already answered the request.
		log.Debug("devcoord: websocket accept failed", "error", err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()

	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	defer func() { _ = nc.Close() }()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Server(nc, cfg)
	if err != nil {
		_ = ws.Close(websocket.StatusInternalError, "yamux")
		return
	}
	defer func() { _ = sess.Close() }()
	log.Debug("devcoord: serving tailnet coordination")
	err = c.srv.Serve(context.WithValue(ctx, identityKey{}, who), sess)
	// A client hanging up ends the yamux session; that is not an error.
	if err != nil && ctx.Err() == nil && !errors.Is(err, yamux.ErrSessionShutdown) && !errors.Is(err, io.EOF) {
		log.Debug("devcoord: connection ended with an error", "error", err)
		_ = ws.Close(websocket.StatusInternalError, err.Error())
		return
	}
	_ = ws.Close(websocket.StatusGoingAway, "")
}
