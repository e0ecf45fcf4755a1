package coordinate

import (
	"github.com/google/uuid"
	"github.com/wsedge/wsedge/tailnet"
	"tailscale.com/tailcfg"
)

// Node is the local tailnet node that coordination drives.
//
// Implementations must not call back into the package synchronously from
// UpsertPeer, RemovePeer, MarkPeerReady or SetDERPMap other than through the
// OnSelfChange callback, which must not block.
type Node interface {
	// Self returns the node's current description.
	Self() tailnet.NodeInfo
	// OnSelfChange registers f to be called with the new description whenever
	// the node changes (home DERP, endpoints, keys). Called once, at start.
	OnSelfChange(f func(tailnet.NodeInfo))
	// UpsertPeer adds or updates a peer.
	UpsertPeer(peerID uuid.UUID, ni tailnet.NodeInfo) error
	// RemovePeer forgets a peer; removing an unknown peer is a no-op.
	RemovePeer(peerID uuid.UUID)
	// MarkPeerReady says the peer has our node, so a WireGuard handshake
	// with it will not be dropped. Called after UpsertPeer.
	MarkPeerReady(peerID uuid.UUID)
	// SetDERPMap installs the DERP map streamed by the primary.
	SetDERPMap(m *tailcfg.DERPMap)
}
