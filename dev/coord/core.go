package devcoord

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/wsedge/wsedge/tailnet"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

// responseBuffer is how many responses may queue for one peer before the
// coordinator gives up on it (coderd: 512).
const responseBuffer = 512

// maxBatchBytes keeps a batched response well under the 4 MiB DRPC limit.
const maxBatchBytes = 1 << 20

var (
	errClosed         = errors.New("coordinator is closed")
	errWouldBlock     = errors.New("would block")
	errAlreadyRemoved = errors.New("already removed")
)

// Tailnet address prefixes an agent may use (see tailnet/tunnel.go in coderd).
var (
	legacyAgentIP    = netip.MustParseAddr("fd7a:115c:a1e0:49d6:b259:b7ac:b1b2:48f4")
	kindNode         = tailnetproto.CoordinateResponse_PeerUpdate_NODE
	kindDisconnected = tailnetproto.CoordinateResponse_PeerUpdate_DISCONNECTED
	kindLost         = tailnetproto.CoordinateResponse_PeerUpdate_LOST
	kindReady        = tailnetproto.CoordinateResponse_PeerUpdate_READY_FOR_HANDSHAKE
)

// auth decides what a peer may ask for.
type auth interface {
	authorize(req *tailnetproto.CoordinateRequest) error
}

// proxyAuth is coderd's "single tailnet" rule: tunnels to any agent.
type proxyAuth struct{}

func (proxyAuth) authorize(*tailnetproto.CoordinateRequest) error { return nil }

// agentAuth forbids tunnels and pins the node's addresses to the agent's.
type agentAuth struct{ id uuid.UUID }

func (a agentAuth) authorize(req *tailnetproto.CoordinateRequest) error {
	if req.GetAddTunnel() != nil {
		return errors.New("agents cannot open tunnels")
	}
	for _, s := range req.GetUpdateSelf().GetNode().GetAddresses() {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("parse node address: %w", err)
		}
		if p.Bits() != 128 {
			return fmt.Errorf("invalid address bits, expected 128, got %d", p.Bits())
		}
		if p.Addr() != tailnet.AgentAddr(a.id) && p.Addr() != tailnet.AgentAddrIn(tailnet.CoderPrefix, a.id) && p.Addr() != legacyAgentIP {
			return fmt.Errorf("invalid node address, got %s", p.Addr())
		}
	}
	return nil
}

func validateRequest(req *tailnetproto.CoordinateRequest) error {
	if req == nil {
		return errors.New("coordinate request is required")
	}
	if req.GetUpdateSelf() != nil && req.GetUpdateSelf().GetNode() == nil {
		return errors.New("update_self node is required")
	}
	for _, r := range req.GetReadyForHandshake() {
		if r == nil {
			return errors.New("ready_for_handshake entry is required")
		}
	}
	return nil
}

type peer struct {
	id    uuid.UUID
	name  string
	kind  string // "proxy" or "agent", for logs
	log   *slog.Logger
	auth  auth
	node  *tailnetproto.Node
	resps chan *tailnetproto.CoordinateResponse
	// sent is the node last sent to this peer about each other peer, so
	// repeats are suppressed and LOST/DISCONNECTED go only to peers that
	// were told about the node.
	sent map[uuid.UUID]*tailnetproto.Node
}

func (p *peer) enqueue(resp *tailnetproto.CoordinateResponse) error {
	select {
	case p.resps <- resp:
		return nil
	default:
		return errWouldBlock
	}
}

// store records what we are about to tell p about peer id and returns the
// update, or nil when nothing needs sending.
func (p *peer) store(id uuid.UUID, n *tailnetproto.Node, k tailnetproto.CoordinateResponse_PeerUpdate_Kind, reason string) *tailnetproto.CoordinateResponse_PeerUpdate {
	old, ok := p.sent[id]
	switch {
	case !ok && k != kindNode:
		return nil
	case k == kindNode:
		if ok && proto.Equal(old, n) {
			return nil
		}
		p.sent[id] = n
	default:
		delete(p.sent, id)
	}
	return &tailnetproto.CoordinateResponse_PeerUpdate{Id: id[:], Node: n, Kind: k, Reason: reason}
}

func (p *peer) update(id uuid.UUID, n *tailnetproto.Node, k tailnetproto.CoordinateResponse_PeerUpdate_Kind, reason string) error {
	up := p.store(id, n, k, reason)
	if up == nil {
		return nil
	}
	return p.enqueue(&tailnetproto.CoordinateResponse{PeerUpdates: []*tailnetproto.CoordinateResponse_PeerUpdate{up}})
}

func (p *peer) batchUpdate(others []*peer, k tailnetproto.CoordinateResponse_PeerUpdate_Kind, reason string) error {
	resp := &tailnetproto.CoordinateResponse{}
	size := 0
	for _, o := range others {
		if o == nil || o.node == nil {
			continue
		}
		up := p.store(o.id, o.node, k, reason)
		if up == nil {
			continue
		}
		if s := proto.Size(up); size+s > maxBatchBytes && len(resp.PeerUpdates) > 0 {
			if err := p.enqueue(resp); err != nil {
				return err
			}
			resp, size = &tailnetproto.CoordinateResponse{}, 0
		}
		resp.PeerUpdates = append(resp.PeerUpdates, up)
		size += proto.Size(up)
	}
	if len(resp.PeerUpdates) == 0 {
		return nil
	}
	return p.enqueue(resp)
}

// tunnels is the set of (source, destination) pairs.
type tunnels struct {
	bySrc map[uuid.UUID]map[uuid.UUID]struct{}
	byDst map[uuid.UUID]map[uuid.UUID]struct{}
}

func newTunnels() *tunnels {
	return &tunnels{bySrc: map[uuid.UUID]map[uuid.UUID]struct{}{}, byDst: map[uuid.UUID]map[uuid.UUID]struct{}{}}
}

func (t *tunnels) add(src, dst uuid.UUID) {
	if t.bySrc[src] == nil {
		t.bySrc[src] = map[uuid.UUID]struct{}{}
	}
	t.bySrc[src][dst] = struct{}{}
	if t.byDst[dst] == nil {
		t.byDst[dst] = map[uuid.UUID]struct{}{}
	}
	t.byDst[dst][src] = struct{}{}
}

func (t *tunnels) remove(src, dst uuid.UUID) {
	delete(t.bySrc[src], dst)
	if len(t.bySrc[src]) == 0 {
		delete(t.bySrc, src)
	}
	delete(t.byDst[dst], src)
	if len(t.byDst[dst]) == 0 {
		delete(t.byDst, dst)
	}
}

// removeAll drops the tunnels id is the source of. Tunnels to id stay: the
// sources still want it and get its node when it comes back.
func (t *tunnels) removeAll(src uuid.UUID) {
	for dst := range t.bySrc[src] {
		t.remove(src, dst)
	}
}

// peersOf lists everyone sharing a tunnel with id, in either direction.
func (t *tunnels) peersOf(id uuid.UUID) []uuid.UUID {
	set := map[uuid.UUID]struct{}{}
	for dst := range t.bySrc[id] {
		set[dst] = struct{}{}
	}
	for src := range t.byDst[id] {
		set[src] = struct{}{}
	}
	out := make([]uuid.UUID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	return out
}

func (t *tunnels) shared(a, b uuid.UUID) bool {
	_, ab := t.bySrc[a][b]
	_, ba := t.byDst[a][b]
	return ab || ba
}

func (t *tunnels) count() int {
	n := 0
	for _, dsts := range t.bySrc {
		n += len(dsts)
	}
	return n
}
