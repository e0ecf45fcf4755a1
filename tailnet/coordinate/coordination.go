package coordinate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"tailscale.com/types/key"

	"github.com/wsedge/wsedge/tailnet"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("coordinate: client closed")

// Defaults of the tunnel and reconnect life-cycle (docs/protocol.md#tunnels;
// lost and ready timeouts as Coder's tailnet uses them).
const (
	DefaultIdleTimeout   = 30 * time.Minute
	DefaultSweepInterval = 5 * time.Minute
	DefaultLostTimeout   = 15 * time.Minute
	DefaultReadyTimeout  = 5 * time.Second
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = 30 * time.Second

	dialTimeout       = 30 * time.Second
	disconnectTimeout = 5 * time.Second
)

type role int

const (
	roleProxy role = iota // tunnel source: opens tunnels, waits for ready_for_handshake
	roleAgent             // tunnel destination: accepts peers, acknowledges them
)

type config struct {
	role         role
	target       string
	header       http.Header
	httpClient   *http.Client
	node         Node
	log          *slog.Logger
	clock        Clock
	lostTimeout  time.Duration
	readyTimeout time.Duration
	minBackoff   time.Duration
	maxBackoff   time.Duration
	// peerGone, if set, hears of peers reported DISCONNECTED or LOST.
	peerGone func(peerID uuid.UUID)
}

// peer is what we know about one remote peer: for the proxy, a tunnel
// destination (an agent); for an agent, a source tunnelling to it.
type peer struct {
	id      uuid.UUID
	key     key.NodePublic
	applied bool // UpsertPeer succeeded with the latest node
	rfh     bool // proxy: ready_for_handshake received
	ready   bool // MarkPeerReady called
	readyCh chan struct{}
	lost    bool

	readyTimer Timer
	readyGen   int
	lostTimer  Timer
	lostGen    int

	// tunnel bookkeeping (proxy only)
	refs     int
	lastUsed time.Time
}

func newPeer(id uuid.UUID) *peer { return &peer{id: id, readyCh: make(chan struct{})} }

func (p *peer) stopTimers() {
	if p.readyTimer != nil {
		p.readyTimer.Stop()
		p.readyTimer = nil
	}
	if p.lostTimer != nil {
		p.lostTimer.Stop()
		p.lostTimer = nil
	}
	p.readyGen++
	p.lostGen++
}

// coordination is the reconnecting engine shared by Client and AgentClient.
//
// Lock order: peerMu, then mu. peerMu serialises peer state and every peer
// call into Node; mu is a leaf that guards the session pointer and the
// published self node and is never held while calling Node, so the node's
// self-change callback may take it from any goroutine.
type coordination struct {
	cfg    config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	peerMu sync.Mutex
	peers  map[uuid.UUID]*peer

	mu        sync.Mutex
	sess      *session
	self      *tailnetproto.Node
	connected bool
	closing   bool
	lastErr   error
	sessions  uint64
	derpMaps  uint64
	sweeps    uint64
}

func newCoordination(ctx context.Context, cfg config) *coordination {
	c := &coordination{cfg: cfg, log: cfg.log, peers: make(map[uuid.UUID]*peer)}
	c.ctx, c.cancel = context.WithCancel(ctx)
	if self := cfg.node.Self(); self.PreferredDERP != 0 {
		if pn, err := NodeToProto(self); err == nil {
			c.self = pn
		}
	}
	cfg.node.OnSelfChange(c.selfChanged)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run()
	}()
	return c
}

// selfChanged publishes the local node. Nodes without a home DERP region are
// not published: peers ignore them (coderd's clients drop preferred_derp 0).
func (c *coordination) selfChanged(ni tailnet.NodeInfo) {
	if ni.PreferredDERP == 0 {
		return
	}
	pn, err := NodeToProto(ni)
	if err != nil {
		c.log.Error("coordinate: cannot encode own node", "error", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.self = pn
	if c.sess != nil && !c.closing {
		c.sess.enqueue(updateSelfReq(pn))
	}
}

func (c *coordination) run() {
	attempt := 0
	for {
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing || c.ctx.Err() != nil {
			return
		}
		established, err := c.runSession()
		if established {
			attempt = 0
		}
		c.mu.Lock()
		closing = c.closing
		if err != nil && !closing && c.ctx.Err() == nil {
			c.lastErr = err
		}
		c.mu.Unlock()
		if closing || c.ctx.Err() != nil {
			return
		}
		delay := c.backoff(attempt)
		attempt++
		c.log.Warn("coordinate: connection to primary failed, retrying", "error", err, "retry_in", delay)
		t := c.cfg.clock.NewTimer(delay)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

func (c *coordination) backoff(attempt int) time.Duration {
	d := c.cfg.minBackoff
	for i := 0; i < attempt && d < c.cfg.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.maxBackoff)
	// ±20% jitter so that many proxies do not reconnect in lockstep.
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// runSession dials, runs one session until it breaks, and reports whether it
// was established.
func (c *coordination) runSession() (bool, error) {
	sctx, scancel := context.WithCancel(c.ctx)
	defer scancel()
	dctx, dcancel := context.WithTimeout(sctx, dialTimeout)
	conn, err := dialRPC(dctx, sctx, c.cfg.httpClient, c.cfg.target, c.cfg.header, c.log)
	dcancel()
	if err != nil {
		return false, err
	}
	defer func() { _ = conn.Close() }()
	client := tailnetproto.NewDRPCTailnetClient(conn)
	coord, err := client.Coordinate(sctx)
	if err != nil {
		return false, fmt.Errorf("coordinate: open Coordinate: %w", err)
	}
	derps, err := client.StreamDERPMaps(sctx, &tailnetproto.StreamDERPMapsRequest{})
	if err != nil {
		return false, fmt.Errorf("coordinate: open StreamDERPMaps: %w", err)
	}
	s := newSession(sctx, coord)
	c.install(s)
	defer c.uninstall(s)
	c.log.Info("coordinate: connected to primary", "url", c.cfg.target)

	errc := make(chan error, 3)
	var wg sync.WaitGroup
	for _, f := range []func() error{
		s.sendLoop,
		func() error { return c.recvCoordinate(s) },
		func() error { return c.recvDERPMaps(derps) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- f()
		}()
	}
	first := <-errc
	scancel()
	_ = conn.Close()
	wg.Wait()
	return true, first
}

func (c *coordination) install(s *session) {
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = s
	c.connected = true
	c.sessions++
	if c.self != nil {
		s.enqueue(updateSelfReq(c.self))
	}
	if c.cfg.role == roleProxy {
		// Tunnels live on the coordinator only as long as our stream does.
		for id := range c.peers {
			s.enqueue(addTunnelReq(id))
		}
	}
	if c.closing {
		s.enqueue(disconnectReq())
	}
}

// uninstall marks every peer lost: the coordinator will send their nodes
// again after we reconnect, and until then established sessions keep working.
func (c *coordination) uninstall(s *session) {
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
		c.connected = false
	}
	c.mu.Unlock()
	for _, p := range c.peers {
		c.markLostLocked(p)
	}
}

func (c *coordination) recvCoordinate(s *session) error {
	for {
		resp, err := s.coord.Recv()
		if err != nil {
			return fmt.Errorf("coordinate recv: %w", err)
		}
		if msg := resp.GetError(); msg != "" {
			c.log.Warn("coordinate: coordinator reported an error", "message", msg)
		}
		c.handleUpdates(s, resp.GetPeerUpdates())
	}
}

func (c *coordination) recvDERPMaps(stream tailnetproto.DRPCTailnet_StreamDERPMapsClient) error {
	for {
		pm, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("coordinate: DERP map stream: %w", err)
		}
		m := DERPMapFromProto(pm)
		c.mu.Lock()
		c.derpMaps++
		c.mu.Unlock()
		c.log.Debug("coordinate: DERP map received", "regions", len(m.Regions))
		c.cfg.node.SetDERPMap(m)
	}
}

func (c *coordination) handleUpdates(s *session, ups []*tailnetproto.CoordinateResponse_PeerUpdate) {
	var gone []uuid.UUID
	defer func() {
		// After peerMu is released: the callback may close connections,
		// whose tunnel releases take peerMu.
		for _, id := range gone {
			c.cfg.peerGone(id)
		}
	}()
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	var acks []*tailnetproto.CoordinateRequest_ReadyForHandshake
	for _, up := range ups {
		id, err := uuid.FromBytes(up.GetId())
		if err != nil {
			c.log.Warn("coordinate: peer update with a malformed id", "id_len", len(up.GetId()))
			continue
		}
		switch up.GetKind() {
		case tailnetproto.CoordinateResponse_PeerUpdate_NODE:
			if c.applyNodeLocked(id, up.GetNode()) && c.cfg.role == roleAgent {
				acks = append(acks, &tailnetproto.CoordinateRequest_ReadyForHandshake{Id: uuidBytes(id)})
			}
		case tailnetproto.CoordinateResponse_PeerUpdate_READY_FOR_HANDSHAKE:
			c.applyReadyLocked(id)
		case tailnetproto.CoordinateResponse_PeerUpdate_DISCONNECTED:
			if p := c.peers[id]; p != nil {
				c.log.Debug("coordinate: peer disconnected", "peer_id", id, "reason", up.GetReason())
				c.forgetLocked(p)
				if c.cfg.peerGone != nil {
					gone = append(gone, id)
				}
			}
		case tailnetproto.CoordinateResponse_PeerUpdate_LOST:
			if p := c.peers[id]; p != nil {
				c.log.Debug("coordinate: peer lost", "peer_id", id, "reason", up.GetReason())
				c.markLostLocked(p)
				if c.cfg.peerGone != nil {
					gone = append(gone, id)
				}
			}
		default:
			c.log.Warn("coordinate: unknown peer update kind", "peer_id", id, "kind", up.GetKind())
		}
	}
	if len(acks) > 0 {
		c.mu.Lock()
		if c.sess == s {
			s.enqueue(&tailnetproto.CoordinateRequest{ReadyForHandshake: acks})
		}
		c.mu.Unlock()
	}
}

// applyNodeLocked installs a peer's node and reports whether it did.
func (c *coordination) applyNodeLocked(id uuid.UUID, pn *tailnetproto.Node) bool {
	p := c.peers[id]
	if p == nil {
		if c.cfg.role == roleProxy {
			c.log.Debug("coordinate: node for a peer we have no tunnel to", "peer_id", id)
			return false
		}
		p = newPeer(id)
		c.peers[id] = p
	}
	if pn.GetPreferredDerp() == 0 {
		c.log.Warn("coordinate: ignoring peer node without a home DERP region", "peer_id", id)
		return false
	}
	ni, err := NodeFromProto(pn)
	if err != nil {
		c.log.Warn("coordinate: ignoring undecodable peer node", "peer_id", id, "error", err)
		return false
	}
	// coderd gives a proxy a fresh peer ID on every connection, so the same
	// key can come back under a new ID. Forget the old entry first so that
	// expiring it later cannot remove the key the new entry uses.
	for oid, o := range c.peers {
		if oid != id && o.applied && o.key == ni.Key {
			c.forgetLocked(o)
		}
	}
	if err := c.cfg.node.UpsertPeer(id, ni); err != nil {
		c.log.Warn("coordinate: node rejected peer", "peer_id", id, "error", err)
		return false
	}
	p.applied, p.key = true, ni.Key
	if p.lost {
		p.lost = false
		if p.lostTimer != nil {
			p.lostTimer.Stop()
			p.lostTimer = nil
		}
		p.lostGen++
	}
	switch {
	case p.ready:
	case c.cfg.role == roleAgent || p.rfh:
		c.markReadyLocked(p)
	case p.readyTimer == nil:
		// Agents that never send ready_for_handshake still work, only later:
		// the same fallback Coder clients use.
		p.readyGen++
		gen := p.readyGen
		p.readyTimer = c.cfg.clock.AfterFunc(c.cfg.readyTimeout, func() { c.readyTimedOut(p, gen) })
	}
	return true
}

func (c *coordination) applyReadyLocked(id uuid.UUID) {
	p := c.peers[id]
	if p == nil || c.cfg.role != roleProxy {
		return
	}
	p.rfh = true
	if p.applied && !p.ready {
		c.markReadyLocked(p)
	}
}

func (c *coordination) markReadyLocked(p *peer) {
	c.cfg.node.MarkPeerReady(p.id)
	p.ready = true
	close(p.readyCh)
	if p.readyTimer != nil {
		p.readyTimer.Stop()
		p.readyTimer = nil
	}
	p.readyGen++
}

func (c *coordination) readyTimedOut(p *peer, gen int) {
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	if c.peers[p.id] != p || p.readyGen != gen || p.ready || !p.applied {
		return
	}
	p.readyTimer = nil
	c.log.Info("coordinate: no ready_for_handshake from peer, proceeding", "peer_id", p.id)
	c.markReadyLocked(p)
}

// markLostLocked keeps a peer for LostTimeout; a NODE update in the meantime
// revives it.
func (c *coordination) markLostLocked(p *peer) {
	if !p.applied {
		if c.cfg.role == roleAgent && !p.ready {
			delete(c.peers, p.id)
		}
		return
	}
	if p.lost {
		return
	}
	p.lost = true
	p.lostGen++
	gen := p.lostGen
	p.lostTimer = c.cfg.clock.AfterFunc(c.cfg.lostTimeout, func() { c.lostTimedOut(p, gen) })
}

func (c *coordination) lostTimedOut(p *peer, gen int) {
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	if c.peers[p.id] != p || p.lostGen != gen || !p.lost {
		return
	}
	p.lostTimer = nil
	c.log.Info("coordinate: removing peer lost for too long", "peer_id", p.id)
	c.forgetLocked(p)
}

// forgetLocked removes a peer's node from the local node. The proxy keeps
// the tunnel entry (the coordinator will send the agent's next node); an
// agent drops the peer entirely.
func (c *coordination) forgetLocked(p *peer) {
	if p.applied {
		c.cfg.node.RemovePeer(p.id)
	}
	p.stopTimers()
	p.applied, p.rfh, p.lost = false, false, false
	if p.ready {
		p.ready = false
		p.readyCh = make(chan struct{})
	}
	if c.cfg.role == roleAgent {
		delete(c.peers, p.id)
	}
}

// close sends disconnect, waits briefly for the coordinator to hang up, then
// stops everything.
func (c *coordination) close() {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.wg.Wait()
		return
	}
	c.closing = true
	s := c.sess
	if s != nil {
		s.enqueue(disconnectReq())
	}
	c.mu.Unlock()
	if s != nil {
		t := time.NewTimer(disconnectTimeout)
		select {
		case <-s.ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	c.cancel()
	c.wg.Wait()
	c.peerMu.Lock()
	for _, p := range c.peers {
		p.stopTimers()
	}
	c.peerMu.Unlock()
}

func (c *coordination) state() (connected bool, lastErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.lastErr
}

// stream is the part of the proxy and agent clients that is about the
// coordination stream itself.
type stream struct{ c *coordination }

// Close sends disconnect (the coordinator then tells peers DISCONNECTED
// rather than LOST), waits briefly for the primary to hang up and stops.
func (s stream) Close() error {
	s.c.close()
	return nil
}

// Connected reports whether a coordination stream is up.
func (s stream) Connected() bool {
	ok, _ := s.c.state()
	return ok
}

// LastError is the most recent connection failure (nil if none so far).
func (s stream) LastError() error {
	_, err := s.c.state()
	return err
}
