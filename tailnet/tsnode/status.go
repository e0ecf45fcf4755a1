package tsnode

import (
	"net/netip"
	"time"

	"github.com/google/uuid"
	"tailscale.com/ipn/ipnstate"
)

// PeerStatus is what the node knows about the path to a peer.
type PeerStatus struct {
	Ready bool // MarkPeerReady was called
	// Direct is the peer's UDP address when traffic flows directly; zero
	// when it is relayed through DERP (or no path is known yet).
	Direct netip.AddrPort
	// DERPRegion is the peer's home DERP region as advertised.
	DERPRegion    int
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// PeerStatus reports the path to a peer; ok is false for unknown peers.
func (n *Node) PeerStatus(peerID uuid.UUID) (st PeerStatus, ok bool) {
	n.mu.Lock()
	p := n.peers[peerID]
	if p == nil || n.closed {
		n.mu.Unlock()
		return PeerStatus{}, false
	}
	k := p.info.Key
	st.Ready, st.DERPRegion = p.ready, p.info.PreferredDERP
	n.mu.Unlock()

	sb := &ipnstate.StatusBuilder{WantPeers: true}
	n.ms.UpdateStatus(sb)
	if ps := sb.Status().Peer[k]; ps != nil {
		if ap, err := netip.ParseAddrPort(ps.CurAddr); err == nil {
			st.Direct = ap
		}
		st.RxBytes, st.TxBytes = ps.RxBytes, ps.TxBytes
	}
	if wp, ok := n.eng.PeerByKey(k); ok {
		st.LastHandshake = wp.LastHandshake()
	}
	return st, true
}
