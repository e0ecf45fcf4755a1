package tsnode

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/wsedge/wsedge/tailnet"
	"tailscale.com/tailcfg"
	"tailscale.com/wgengine"
)

// Self returns the node's current description. PreferredDERP is never zero
// once a DERP map with a region is installed: until magicsock has measured
// a home region, the lowest region ID of the map is advertised (peers ignore
// nodes without a home region).
func (n *Node) Self() tailnet.NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.selfLocked()
}

func (n *Node) selfLocked() tailnet.NodeInfo {
	prefix := netip.PrefixFrom(n.addr, n.addr.BitLen())
	ni := tailnet.NodeInfo{
		ID:        n.id,
		AsOf:      time.Now().UTC(),
		Key:       n.priv.Public(),
		DiscoKey:  n.disco,
		Addresses: []netip.Prefix{prefix},
		// Coder clients advertise their address as the only allowed IP.
		AllowedIPs: []netip.Prefix{prefix},
		Endpoints:  slices.Clone(n.endpoints),
	}
	if n.netInfo != nil {
		ni.PreferredDERP = n.netInfo.PreferredDERP
		if len(n.netInfo.DERPLatency) > 0 {
			ni.DERPLatency = maps.Clone(n.netInfo.DERPLatency)
		}
	}
	if ni.PreferredDERP != 0 && (n.derpMap == nil || n.derpMap.Regions[ni.PreferredDERP] == nil) {
		ni.PreferredDERP = 0
	}
	if ni.PreferredDERP == 0 {
		ni.PreferredDERP = fallbackRegion(n.derpMap)
	}
	return ni
}

// fallbackRegion is the lowest region ID of m, or 0.
func fallbackRegion(m *tailcfg.DERPMap) int {
	if m == nil {
		return 0
	}
	ids := slices.Sorted(maps.Keys(m.Regions))
	for _, id := range ids {
		if r := m.Regions[id]; r != nil && !r.NoMeasureNoHome && len(r.Nodes) > 0 {
			return id
		}
	}
	return 0
}

// OnSelfChange registers f, called with the node's description whenever its
// home DERP region, endpoints or keys change, and once now if the node
// already has a home region. f must not block.
func (n *Node) OnSelfChange(f func(tailnet.NodeInfo)) {
	n.notifyMu.Lock()
	defer n.notifyMu.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.callbacks = append(n.callbacks, f)
	cur := n.selfLocked()
	n.mu.Unlock()
	if cur.PreferredDERP != 0 {
		f(cur)
	}
}

// publishSelf hands the current description to the callbacks if it differs
// from the last one published.
func (n *Node) publishSelf() {
	n.notifyMu.Lock()
	defer n.notifyMu.Unlock()
	n.mu.Lock()
	cur := n.selfLocked()
	if n.closed || (n.published != nil && sameNode(*n.published, cur)) {
		n.mu.Unlock()
		return
	}
	n.published = &cur
	cbs := slices.Clone(n.callbacks)
	n.mu.Unlock()
	n.log.Debug("tsnode: own node changed", "derp", cur.PreferredDERP, "endpoints", len(cur.Endpoints))
	for _, f := range cbs {
		f(cur)
	}
}

// sameNode compares what peers care about (AsOf and latencies excluded:
// latencies wobble all the time and are informational).
func sameNode(a, b tailnet.NodeInfo) bool {
	return a.Key == b.Key && a.DiscoKey == b.DiscoKey && a.PreferredDERP == b.PreferredDERP &&
		slices.Equal(a.Endpoints, b.Endpoints) && slices.Equal(a.Addresses, b.Addresses) &&
		reflect.DeepEqual(a.DERPForcedWebsocket, b.DERPForcedWebsocket)
}

// onNetInfo is magicsock's callback after each netcheck (home DERP region).
func (n *Node) onNetInfo(ni *tailcfg.NetInfo) {
	n.mu.Lock()
	n.netInfo = ni.Clone()
	n.mu.Unlock()
	n.publishSelf()
}

// onEngineStatus is the engine's status callback (local endpoints changed,
// DERP connections came or went).
func (n *Node) onEngineStatus(st *wgengine.Status, err error) {
	if err != nil || st == nil {
		return
	}
	var eps []netip.AddrPort
	if !n.opts.DERPOnly {
		for _, ep := range st.LocalAddrs {
			if !ep.Addr.IsValid() || (n.opts.LoopbackOnly && !ep.Addr.Addr().IsLoopback()) {
				continue
			}
			if !slices.Contains(eps, ep.Addr) {
				eps = append(eps, ep.Addr)
			}
		}
	}
	slices.SortFunc(eps, netip.AddrPort.Compare)
	n.mu.Lock()
	n.endpoints = eps
	n.mu.Unlock()
	n.publishSelf()
}

// SetDERPMap installs a new DERP map (live: DERP connections follow it).
func (n *Node) SetDERPMap(m *tailcfg.DERPMap) {
	n.cfgMu.Lock()
	n.applyDERPMapLocked(m)
	n.cfgMu.Unlock()
	n.publishSelf()
}

func (n *Node) applyDERPMapLocked(m *tailcfg.DERPMap) {
	if m != nil {
		m = m.Clone()
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.derpMap = m
	home := 0
	if n.netInfo != nil {
		home = n.netInfo.PreferredDERP
	}
	n.mu.Unlock()
	n.ms.SetDERPMap(m)
	// Connect to a home region now rather than after the first netcheck
	// (seconds later): until then packets peers send to the home region we
	// advertise would be dropped by the DERP server.
	if fb := fallbackRegion(m); fb != 0 && (home == 0 || m.Regions[home] == nil) {
		n.ms.ForceSetNearestDERP(fb)
	}
}
