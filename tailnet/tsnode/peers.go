package tsnode

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/wsedge/wsedge/tailnet"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/wgengine"
)

// ErrInvalidPeer is wrapped by UpsertPeer's errors for nodes it cannot use.
var ErrInvalidPeer = errors.New("tsnode: invalid peer node")

type peer struct {
	id     uuid.UUID
	nodeID tailcfg.NodeID
	info   tailnet.NodeInfo
	view   tailcfg.NodeView
	ready  bool
	// srtt: smoothed TCP handshake time of first-attempt dials to this
	// peer (0 until one is measured); see synTimeout.
	srtt time.Duration
	// departing: removed, WireGuard state kept until departTimer fires.
	departing   bool
	departTimer *time.Timer
}

// UpsertPeer adds the peer or updates its node (new keys, home DERP,
// endpoints). A peer whose key changed loses its WireGuard session and
// handshakes again.
func (n *Node) UpsertPeer(peerID uuid.UUID, ni tailnet.NodeInfo) error {
	if ni.Key.IsZero() {
		return fmt.Errorf("%w: %s: zero node key", ErrInvalidPeer, peerID)
	}
	if ni.DiscoKey.IsZero() {
		return fmt.Errorf("%w: %s: zero disco key", ErrInvalidPeer, peerID)
	}
	if len(ni.Addresses) == 0 && len(ni.AllowedIPs) == 0 {
		return fmt.Errorf("%w: %s: no addresses", ErrInvalidPeer, peerID)
	}
	ni = cloneNodeInfo(ni)
	if n.opts.DERPOnly {
		ni.Endpoints = nil
	}

	n.cfgMu.Lock()
	defer n.cfgMu.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	p := n.peers[peerID]
	// The same key under another peer ID (coderd hands out a fresh peer ID
	// when a proxy reconnects), or a peer removed moments ago coming back:
	// take the entry over so magicsock keeps its node ID and WireGuard its
	// session. Otherwise the session would be reset and the side that kept
	// its keys would only notice after wireguard-go's 15 s timeout.
	if o := n.byKey[ni.Key]; o != nil && o != p {
		if p != nil {
			// This ID had another key: drop that entry for real.
			n.forgetLocked(p)
			n.unindexAddrsLocked(p)
			defer n.finalizeRemoval(p)
		}
		if o.departTimer != nil {
			o.departTimer.Stop()
			o.departTimer = nil
		}
		o.departing = false
		if n.peers[o.id] == o {
			delete(n.peers, o.id)
		}
		o.id = peerID
		p = o
		n.peers[peerID] = p
	}
	if p == nil {
		n.nextID++
		p = &peer{id: peerID, nodeID: n.nextID + 1} // 1 is self
		n.peers[peerID] = p
	}
	oldKey := p.info.Key
	if !oldKey.IsZero() && oldKey != ni.Key && n.byKey[oldKey] == p {
		delete(n.byKey, oldKey)
	}
	if oldKey != ni.Key {
		p.srtt = 0 // a new node: its path is measured anew
	}
	n.unindexAddrsLocked(p)
	p.info = ni
	p.view = peerNode(p.nodeID, ni).View()
	n.byKey[ni.Key] = p
	for _, pfx := range p.view.AllowedIPs().All() {
		if pfx.IsSingleIP() {
			n.byAddr[pfx.Addr()] = p
		}
	}
	view := p.view
	n.notifyPeersLocked()
	n.mu.Unlock()

	if !oldKey.IsZero() && oldKey != ni.Key {
		n.eng.ResetDevicePeer(oldKey)
	}
	n.ms.UpsertPeer(view)
	n.eng.SyncDevicePeer(ni.Key)
	n.log.Debug("tsnode: peer upserted", "peer_id", peerID, "node_key", ni.Key.ShortString(), "derp", ni.PreferredDERP)
	return nil
}

// RemovePeer forgets the peer; removing an unknown peer is a no-op. Dial
// stops reaching it at once; its WireGuard state is dropped after
// Options.RemoveGrace unless the same key comes back (under any peer ID) in
// the meantime, as it does when the coordinator reissues a peer's ID.
func (n *Node) RemovePeer(peerID uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[peerID]
	if p == nil || n.closed {
		return
	}
	delete(n.peers, peerID)
	p.ready = false
	p.departing = true
	p.departTimer = time.AfterFunc(n.opts.RemoveGrace, func() { n.departed(p) })
	n.notifyPeersLocked()
	n.log.Debug("tsnode: peer removed", "peer_id", peerID)
}

// departed drops a removed peer that did not come back.
func (n *Node) departed(p *peer) {
	n.cfgMu.Lock()
	defer n.cfgMu.Unlock()
	n.mu.Lock()
	if !p.departing || n.closed {
		n.mu.Unlock()
		return
	}
	p.departing = false
	p.departTimer = nil
	n.forgetLocked(p)
	n.mu.Unlock()
	n.finalizeRemoval(p)
}

// finalizeRemoval removes p from magicsock and WireGuard; cfgMu held.
func (n *Node) finalizeRemoval(p *peer) {
	n.ms.RemovePeer(p.nodeID)
	n.eng.ResetDevicePeer(p.info.Key)
}

// MarkPeerReady says the peer has our node, so Dial may start the WireGuard
// handshake with it. Unknown peers are ignored.
func (n *Node) MarkPeerReady(peerID uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.peers[peerID]; p != nil && !p.ready {
		p.ready = true
		n.notifyPeersLocked()
	}
}

func (n *Node) forgetLocked(p *peer) {
	if n.peers[p.id] == p {
		delete(n.peers, p.id)
	}
	n.unindexAddrsLocked(p)
	if n.byKey[p.info.Key] == p {
		delete(n.byKey, p.info.Key)
	}
}

func (n *Node) unindexAddrsLocked(p *peer) {
	if !p.view.Valid() {
		return
	}
	for _, pfx := range p.view.AllowedIPs().All() {
		if n.byAddr[pfx.Addr()] == p {
			delete(n.byAddr, pfx.Addr())
		}
	}
}

// notifyPeersLocked wakes everyone waiting in Dial.
func (n *Node) notifyPeersLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// peerNode is the tailcfg view magicsock and the engine need. Hostinfo must
// be set: magicsock's ping path dereferences it.
func peerNode(id tailcfg.NodeID, ni tailnet.NodeInfo) *tailcfg.Node {
	allowed := ni.AllowedIPs
	if len(allowed) == 0 {
		allowed = ni.Addresses
	}
	return &tailcfg.Node{
		ID:                id,
		StableID:          tailcfg.StableNodeID(fmt.Sprintf("peer-%d", id)),
		Name:              fmt.Sprintf("peer-%d.", id),
		Key:               ni.Key,
		DiscoKey:          ni.DiscoKey,
		Addresses:         ni.Addresses,
		AllowedIPs:        allowed,
		Endpoints:         ni.Endpoints,
		HomeDERP:          ni.PreferredDERP,
		Hostinfo:          (&tailcfg.Hostinfo{Hostname: fmt.Sprintf("peer-%d", id)}).View(),
		MachineAuthorized: true,
	}
}

// peerAllowedIPs feeds wireguard-go's lazily created peers.
func (n *Node) peerAllowedIPs(k key.NodePublic) ([]netip.Prefix, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.byKey[k]
	if p == nil {
		return nil, false
	}
	return slices.Clone(p.view.AllowedIPs().AsSlice()), true
}

// peerKeyForIP picks the peer for an outbound packet.
func (n *Node) peerKeyForIP(dst netip.Addr) (key.NodePublic, bool) {
	if p, ok := n.peerByIP(dst); ok {
		return p.info.Key, true
	}
	return key.NodePublic{}, false
}

func (n *Node) peerForIP(ip netip.Addr) (wgengine.PeerForIP, bool) {
	if ip == n.addr {
		return wgengine.PeerForIP{Node: n.self, IsSelf: true, Route: netip.PrefixFrom(ip, ip.BitLen())}, true
	}
	p, ok := n.peerByIP(ip)
	if !ok {
		return wgengine.PeerForIP{}, false
	}
	for _, pfx := range p.view.AllowedIPs().All() {
		if pfx.Contains(ip) {
			return wgengine.PeerForIP{Node: p.view, Route: pfx}, true
		}
	}
	return wgengine.PeerForIP{}, false
}

// peerByIP returns a copy of the peer whose allowed IPs contain ip most
// specifically.
func (n *Node) peerByIP(ip netip.Addr) (peer, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.byAddr[ip]; p != nil {
		return *p, true
	}
	var best *peer
	bestBits := -1
	for _, p := range n.peers {
		for _, pfx := range p.view.AllowedIPs().All() {
			if pfx.Contains(ip) && pfx.Bits() > bestBits {
				best, bestBits = p, pfx.Bits()
			}
		}
	}
	if best == nil {
		return peer{}, false
	}
	return *best, true
}

func cloneNodeInfo(ni tailnet.NodeInfo) tailnet.NodeInfo {
	ni.Addresses = slices.Clone(ni.Addresses)
	ni.AllowedIPs = slices.Clone(ni.AllowedIPs)
	ni.Endpoints = slices.Clone(ni.Endpoints)
	if ni.DERPLatency != nil {
		m := make(map[string]float64, len(ni.DERPLatency))
		for k, v := range ni.DERPLatency {
			m[k] = v
		}
		ni.DERPLatency = m
	}
	if ni.DERPForcedWebsocket != nil {
		m := make(map[int]string, len(ni.DERPForcedWebsocket))
		for k, v := range ni.DERPForcedWebsocket {
			m[k] = v
		}
		ni.DERPForcedWebsocket = m
	}
	return ni
}
