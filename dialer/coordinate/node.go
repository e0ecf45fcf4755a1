package coordinate

import (
	"net/netip"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// NodeInfo is one tailnet node as the coordinator relays it: our own node
// (published with update_self) or a peer's (received in a NODE update). It has
// the same fields as dialer/tsnode.NodeInfo, so a value of either type converts
// to the other with a plain type conversion.
type NodeInfo struct {
	ID                  int64
	AsOf                time.Time
	Key                 key.NodePublic
	DiscoKey            key.DiscoPublic
	PreferredDERP       int
	DERPLatency         map[string]float64
	DERPForcedWebsocket map[int]string
	Addresses           []netip.Prefix
	AllowedIPs          []netip.Prefix
	Endpoints           []netip.AddrPort
}

// Node is the local tailnet node that coordination drives.
//
// Implementations must not call back into the package synchronously from
// UpsertPeer, RemovePeer, MarkPeerReady or SetDERPMap other than through the
// OnSelfChange callback, which must not block.
type Node interface {
	// Self returns the node's current description.
	Self() NodeInfo
	// OnSelfChange registers f to be called with the new description whenever
	// the node changes (home DERP, endpoints, keys). Called once, at start.
	OnSelfChange(f func(NodeInfo))
	// UpsertPeer adds or updates a peer.
	UpsertPeer(peerID uuid.UUID, ni NodeInfo) error
	// RemovePeer forgets a peer; removing an unknown peer is a no-op.
	RemovePeer(peerID uuid.UUID)
	// MarkPeerReady says the peer has our node, so a WireGuard handshake
	// with it will not be dropped. Called after UpsertPeer.
	MarkPeerReady(peerID uuid.UUID)
	// SetDERPMap installs the DERP map streamed by the primary.
	SetDERPMap(m *tailcfg.DERPMap)
}
