package devcoord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"storj.io/drpc/drpcmanager"
	"storj.io/drpc/drpcmux"
	"storj.io/drpc/drpcserver"
	"storj.io/drpc/drpcwire"
	"tailscale.com/tailcfg"

	"github.com/wsedge/wsedge/tailnet/coordinate"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

// Options configures a Coordinator.
type Options struct {
	Logger *slog.Logger
	// DERPMap, if set, is asked for the map to stream until SetDERPMap is
	// called; streams re-ask every DERPMapUpdateInterval.
	DERPMap func() *tailcfg.DERPMap
	// DERPMapUpdateInterval defaults to 5 s.
	DERPMapUpdateInterval time.Duration
}

// Coordinator relays nodes between proxies and agents. Create it with New.
type Coordinator struct {
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	srv    *drpcserver.Server
	conns  sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	peers   map[uuid.UUID]*peer
	tunnels *tunnels

	derpMu       sync.Mutex
	derpMap      *tailcfg.DERPMap
	derpSet      bool
	derpChanged  chan struct{}
	derpFn       func() *tailcfg.DERPMap
	derpInterval time.Duration
}

// New returns a running Coordinator.
func New(opts Options) *Coordinator {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Coordinator{
		log:          log,
		peers:        map[uuid.UUID]*peer{},
		tunnels:      newTunnels(),
		derpChanged:  make(chan struct{}),
		derpFn:       opts.DERPMap,
		derpInterval: opts.DERPMapUpdateInterval,
	}
	if c.derpInterval <= 0 {
		c.derpInterval = 5 * time.Second
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	mux := drpcmux.New()
	if err := tailnetproto.DRPCRegisterTailnet(mux, &service{c: c}); err != nil {
		// Registration fails only on a malformed generated description.
		panic(fmt.Sprintf("devcoord: register DRPC service: %v", err))
	}
	c.srv = drpcserver.NewWithOptions(mux, drpcserver.Options{
		Manager: drpcmanager.Options{Reader: drpcwire.ReaderOptions{MaximumBufferSize: coordinate.MaxMessageSize}},
		Log: func(err error) {
			if !errors.Is(err, context.Canceled) {
				log.Debug("devcoord: drpc server", "error", err)
			}
		},
	})
	return c
}

// SetDERPMap replaces the DERP map and pushes it to every StreamDERPMaps
// subscriber.
func (c *Coordinator) SetDERPMap(m *tailcfg.DERPMap) {
	c.derpMu.Lock()
	defer c.derpMu.Unlock()
	c.derpMap = m.Clone()
	c.derpSet = true
	close(c.derpChanged)
	c.derpChanged = make(chan struct{})
}

func (c *Coordinator) currentDERPMap() (*tailcfg.DERPMap, <-chan struct{}) {
	c.derpMu.Lock()
	m, set, ch, fn := c.derpMap, c.derpSet, c.derpChanged, c.derpFn
	c.derpMu.Unlock()
	if !set && fn != nil {
		m = fn()
	}
	return m, ch
}

// Close marks every peer LOST to its tunnel peers (so established sessions
// are not disrupted), ends all streams and waits for the connections to end.
func (c *Coordinator) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for id := range c.peers {
			c.removePeerLocked(id, kindLost, "coordinator close")
		}
	}
	c.mu.Unlock()
	c.cancel()
	c.conns.Wait()
	return nil
}

// Stats reports the number of connected peers and tunnels (for tests, debug
// pages and metrics).
func (c *Coordinator) Stats() (peers, tunnels int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.peers), c.tunnels.count()
}

// Node returns the last node a connected peer published, or nil.
func (c *Coordinator) Node(id uuid.UUID) *tailnetproto.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.peers[id]; p != nil {
		return p.node
	}
	return nil
}

func (c *Coordinator) initPeer(p *peer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	if old, ok := c.peers[p.id]; ok {
		old.log.Info("devcoord: peer overwritten by a new connection")
		close(old.resps)
	}
	c.peers[p.id] = p
	var others []*peer
	for _, id := range c.tunnels.peersOf(p.id) {
		others = append(others, c.peers[id])
	}
	return p.batchUpdate(others, kindNode, "init")
}

// lostPeer handles a stream that ended without disconnect.
func (c *Coordinator) lostPeer(p *peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.peers[p.id] != p {
		return
	}
	c.removePeerLocked(p.id, kindLost, "lost")
}

func (c *Coordinator) handleRequest(p *peer, req *tailnetproto.CoordinateRequest) error {
	if err := validateRequest(req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	if c.peers[p.id] != p {
		return errAlreadyRemoved
	}
	if err := p.auth.authorize(req); err != nil {
		return fmt.Errorf("authorize request: %w", err)
	}
	if us := req.GetUpdateSelf(); us != nil {
		p.node = us.GetNode()
		c.updateTunnelPeersLocked(p.id, p.node, kindNode, "node update")
	}
	if t := req.GetAddTunnel(); t != nil {
		dst, err := uuid.FromBytes(t.GetId())
		if err != nil {
			return fmt.Errorf("unable to convert bytes to UUID: %w", err)
		}
		if err := c.addTunnelLocked(p, dst); err != nil {
			return err
		}
	}
	if t := req.GetRemoveTunnel(); t != nil {
		dst, err := uuid.FromBytes(t.GetId())
		if err != nil {
			return fmt.Errorf("unable to convert bytes to UUID: %w", err)
		}
		if err := c.removeTunnelLocked(p, dst); err != nil {
			return err
		}
	}
	if req.GetDisconnect() != nil {
		c.removePeerLocked(p.id, kindDisconnected, "graceful disconnect")
		return nil
	}
	if rfhs := req.GetReadyForHandshake(); len(rfhs) > 0 {
		if err := c.readyForHandshakeLocked(p, rfhs); err != nil {
			return fmt.Errorf("handle ack: %w", err)
		}
	}
	return nil
}

func (c *Coordinator) updateTunnelPeersLocked(id uuid.UUID, n *tailnetproto.Node, k tailnetproto.CoordinateResponse_PeerUpdate_Kind, reason string) {
	for _, oid := range c.tunnels.peersOf(id) {
		o, ok := c.peers[oid]
		if !ok {
			continue
		}
		if err := o.update(id, n, k, reason); err != nil {
			o.log.Error("devcoord: failed to update peer", "error", err)
			c.removePeerLocked(o.id, kindDisconnected, "failed update")
		}
	}
}

func (c *Coordinator) addTunnelLocked(src *peer, dstID uuid.UUID) error {
	c.tunnels.add(src.id, dstID)
	dst, ok := c.peers[dstID]
	if !ok {
		return nil
	}
	if dst.node != nil {
		if err := src.update(dstID, dst.node, kindNode, "add tunnel"); err != nil {
			c.removePeerLocked(src.id, kindDisconnected, "failed update")
			return fmt.Errorf("add tunnel: %w", err)
		}
	}
	if src.node != nil {
		if err := dst.update(src.id, src.node, kindNode, "add tunnel"); err != nil {
			c.removePeerLocked(dst.id, kindDisconnected, "failed update")
		}
	}
	return nil
}

func (c *Coordinator) removeTunnelLocked(src *peer, dstID uuid.UUID) error {
	if err := src.update(dstID, nil, kindDisconnected, "remove tunnel"); err != nil {
		c.removePeerLocked(src.id, kindDisconnected, "failed update")
		return fmt.Errorf("remove tunnel: %w", err)
	}
	if dst, ok := c.peers[dstID]; ok {
		if err := dst.update(src.id, nil, kindDisconnected, "remove tunnel"); err != nil {
			c.removePeerLocked(dst.id, kindDisconnected, "failed update")
		}
	}
	c.tunnels.remove(src.id, dstID)
	return nil
}

// readyForHandshakeLocked relays a destination's acknowledgements to the
// sources. An acknowledgement for a peer we share no tunnel with is answered
// with an error message, not a hang-up: the source may just have left.
func (c *Coordinator) readyForHandshakeLocked(src *peer, rfhs []*tailnetproto.CoordinateRequest_ReadyForHandshake) error {
	for _, rfh := range rfhs {
		dstID, err := uuid.FromBytes(rfh.GetId())
		if err != nil {
			return fmt.Errorf("unable to convert bytes to UUID: %w", err)
		}
		if !c.tunnels.shared(src.id, dstID) {
			if err := src.enqueue(&tailnetproto.CoordinateResponse{
				Error: fmt.Sprintf("you do not share a tunnel with %q", dstID.String()),
			}); err != nil {
				return err
			}
			continue
		}
		if dst, ok := c.peers[dstID]; ok {
			if err := dst.enqueue(&tailnetproto.CoordinateResponse{
				PeerUpdates: []*tailnetproto.CoordinateResponse_PeerUpdate{{Id: src.id[:], Kind: kindReady}},
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Coordinator) removePeerLocked(id uuid.UUID, k tailnetproto.CoordinateResponse_PeerUpdate_Kind, reason string) {
	p, ok := c.peers[id]
	if !ok {
		return
	}
	c.updateTunnelPeersLocked(id, nil, k, reason)
	c.tunnels.removeAll(id)
	close(p.resps)
	delete(c.peers, id)
	p.log.Debug("devcoord: peer removed", "reason", reason)
}
