package coordinate_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"github.com/wsedge/wsedge/dialer/coordinate"
)

// otherInfo stands in for dialer/tsnode.NodeInfo: same fields, own type.
type otherInfo struct {
	ID                    int64
	AsOf                  time.Time
	Key                   key.NodePublic
	DiscoKey              key.DiscoPublic
	PreferredDERP         int
	DERPLatency           map[string]float64
	DERPForcedWebsocket   map[int]string
	Addresses, AllowedIPs []netip.Prefix
	Endpoints             []netip.AddrPort
}

type otherNode struct {
	self  otherInfo
	cb    func(otherInfo)
	peers map[uuid.UUID]otherInfo
}

func (o *otherNode) Self() otherInfo                             { return o.self }
func (o *otherNode) OnSelfChange(f func(otherInfo))              { o.cb = f }
func (o *otherNode) UpsertPeer(id uuid.UUID, ni otherInfo) error { o.peers[id] = ni; return nil }
func (o *otherNode) RemovePeer(id uuid.UUID)                     { delete(o.peers, id) }
func (o *otherNode) MarkPeerReady(uuid.UUID)                     {}
func (o *otherNode) SetDERPMap(*tailcfg.DERPMap)                 {}

func TestAdaptNode(t *testing.T) {
	on := &otherNode{self: otherInfo{ID: 7, PreferredDERP: 999}, peers: map[uuid.UUID]otherInfo{}}
	n := coordinate.AdaptNode[otherInfo](on)
	if got := n.Self(); got.ID != 7 || got.PreferredDERP != 999 {
		t.Errorf("Self = %+v", got)
	}
	var seen coordinate.NodeInfo
	n.OnSelfChange(func(ni coordinate.NodeInfo) { seen = ni })
	on.cb(otherInfo{ID: 8})
	if seen.ID != 8 {
		t.Errorf("callback saw %+v", seen)
	}
	id := uuid.New()
	if err := n.UpsertPeer(id, coordinate.NodeInfo{ID: 9}); err != nil || on.peers[id].ID != 9 {
		t.Errorf("UpsertPeer: %v, %+v", err, on.peers[id])
	}
	n.RemovePeer(id)
	if _, ok := on.peers[id]; ok {
		t.Error("RemovePeer did not reach the node")
	}
}
