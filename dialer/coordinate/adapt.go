package coordinate

import (
	"net/netip"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// NodeInfoShape is satisfied by any struct type with exactly NodeInfo's
// fields, such as dialer/tsnode.NodeInfo.
type NodeInfoShape interface {
	~struct {
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
}

// NodeOf is a tailnet node whose methods use its own NodeInfo type.
type NodeOf[NI NodeInfoShape] interface {
	Self() NI
	OnSelfChange(f func(NI))
	UpsertPeer(peerID uuid.UUID, ni NI) error
	RemovePeer(peerID uuid.UUID)
	MarkPeerReady(peerID uuid.UUID)
	SetDERPMap(m *tailcfg.DERPMap)
}

// AdaptNode lets a node with its own NodeInfo type (dialer/tsnode's) be
// driven by Client and AgentClient: AdaptNode[tsnode.NodeInfo](node).
func AdaptNode[NI NodeInfoShape](n NodeOf[NI]) Node { return adapted[NI]{n} }

type adapted[NI NodeInfoShape] struct{ n NodeOf[NI] }

func (a adapted[NI]) Self() NodeInfo { return NodeInfo(a.n.Self()) }

func (a adapted[NI]) OnSelfChange(f func(NodeInfo)) {
	a.n.OnSelfChange(func(ni NI) { f(NodeInfo(ni)) })
}

func (a adapted[NI]) UpsertPeer(id uuid.UUID, ni NodeInfo) error { return a.n.UpsertPeer(id, NI(ni)) }
func (a adapted[NI]) RemovePeer(id uuid.UUID)                    { a.n.RemovePeer(id) }
func (a adapted[NI]) MarkPeerReady(id uuid.UUID)                 { a.n.MarkPeerReady(id) }
func (a adapted[NI]) SetDERPMap(m *tailcfg.DERPMap)              { a.n.SetDERPMap(m) }
