package coordinate

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"

	"google.golang.org/protobuf/types/known/timestamppb"
	"tailscale.com/tailcfg"

	"github.com/wsedge/wsedge/tailnet"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

// ErrInvalidNode is wrapped by every error NodeFromProto returns.
var ErrInvalidNode = errors.New("invalid tailnet node")

// NodeError says which field of a protobuf Node could not be decoded.
type NodeError struct {
	Field string
	Err   error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("invalid tailnet node: field %s: %v", e.Field, e.Err)
}

// Unwrap returns both the cause and ErrInvalidNode.
func (e *NodeError) Unwrap() []error { return []error{ErrInvalidNode, e.Err} }

// NodeToProto encodes a node the way coderd and Coder clients do: the key in
// Tailscale's binary form ("np" + 32 bytes), the disco key as text
// ("discokey:<hex>"), prefixes as CIDR text and endpoints as "ip:port".
func NodeToProto(ni tailnet.NodeInfo) (*tailnetproto.Node, error) {
	k, err := ni.Key.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode node key: %w", err)
	}
	d, err := ni.DiscoKey.MarshalText()
	if err != nil {
		return nil, fmt.Errorf("encode disco key: %w", err)
	}
	p := &tailnetproto.Node{
		Id:            ni.ID,
		AsOf:          timestamppb.New(ni.AsOf),
		Key:           k,
		Disco:         string(d),
		PreferredDerp: int32(ni.PreferredDERP),
		DerpLatency:   maps.Clone(ni.DERPLatency),
		Addresses:     prefixStrings(ni.Addresses),
		AllowedIps:    prefixStrings(ni.AllowedIPs),
	}
	if len(ni.DERPForcedWebsocket) > 0 {
		p.DerpForcedWebsocket = make(map[int32]string, len(ni.DERPForcedWebsocket))
		for region, reason := range ni.DERPForcedWebsocket {
			p.DerpForcedWebsocket[int32(region)] = reason
		}
	}
	if len(ni.Endpoints) > 0 {
		p.Endpoints = make([]string, len(ni.Endpoints))
		for i, ep := range ni.Endpoints {
			p.Endpoints[i] = ep.String()
		}
	}
	return p, nil
}

// NodeFromProto decodes a node received from the coordinator. Any field that
// cannot be decoded yields a *NodeError.
func NodeFromProto(p *tailnetproto.Node) (tailnet.NodeInfo, error) {
	if p == nil {
		return tailnet.NodeInfo{}, &NodeError{Field: "node", Err: errors.New("missing")}
	}
	var ni tailnet.NodeInfo
	ni.ID = p.GetId()
	if p.GetAsOf() != nil {
		ni.AsOf = p.GetAsOf().AsTime()
	}
	if err := ni.Key.UnmarshalBinary(p.GetKey()); err != nil {
		return tailnet.NodeInfo{}, &NodeError{Field: "key", Err: err}
	}
	if err := ni.DiscoKey.UnmarshalText([]byte(p.GetDisco())); err != nil {
		return tailnet.NodeInfo{}, &NodeError{Field: "disco", Err: err}
	}
	ni.PreferredDERP = int(p.GetPreferredDerp())
	ni.DERPLatency = maps.Clone(p.GetDerpLatency())
	if len(p.GetDerpForcedWebsocket()) > 0 {
		ni.DERPForcedWebsocket = make(map[int]string, len(p.GetDerpForcedWebsocket()))
		for region, reason := range p.GetDerpForcedWebsocket() {
			ni.DERPForcedWebsocket[int(region)] = reason
		}
	}
	var err error
	if ni.Addresses, err = parsePrefixes(p.GetAddresses()); err != nil {
		return tailnet.NodeInfo{}, &NodeError{Field: "addresses", Err: err}
	}
	if ni.AllowedIPs, err = parsePrefixes(p.GetAllowedIps()); err != nil {
		return tailnet.NodeInfo{}, &NodeError{Field: "allowed_ips", Err: err}
	}
	if len(p.GetEndpoints()) > 0 {
		ni.Endpoints = make([]netip.AddrPort, len(p.GetEndpoints()))
		for i, s := range p.GetEndpoints() {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				return tailnet.NodeInfo{}, &NodeError{Field: "endpoints", Err: err}
			}
			ni.Endpoints[i] = ap
		}
	}
	return ni, nil
}

func prefixStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// DERPMapToProto encodes a DERP map. HomeParams is always present, as coderd
// sends it, because Coder clients dereference it unconditionally. Upstream
// tailcfg has no EmbeddedRelay or ForceHTTP fields (Coder's fork does), so
// those are sent as false; the wire's "avoid" maps to upstream's
// NoMeasureNoHome, which replaced the deprecated DERPRegion.Avoid.
func DERPMapToProto(m *tailcfg.DERPMap) *tailnetproto.DERPMap {
	if m == nil {
		return nil
	}
	out := &tailnetproto.DERPMap{
		HomeParams: &tailnetproto.DERPMap_HomeParams{},
		Regions:    make(map[int64]*tailnetproto.DERPMap_Region, len(m.Regions)),
	}
	if m.HomeParams != nil && len(m.HomeParams.RegionScore) > 0 {
		out.HomeParams.RegionScore = make(map[int64]float64, len(m.HomeParams.RegionScore))
		for id, score := range m.HomeParams.RegionScore {
			out.HomeParams.RegionScore[int64(id)] = score
		}
	}
	for id, r := range m.Regions {
		if r == nil {
			continue
		}
		pr := &tailnetproto.DERPMap_Region{
			RegionId:   int64(r.RegionID),
			RegionCode: r.RegionCode,
			RegionName: r.RegionName,
			Avoid:      r.NoMeasureNoHome,
			Nodes:      make([]*tailnetproto.DERPMap_Region_Node, 0, len(r.Nodes)),
		}
		for _, n := range r.Nodes {
			if n == nil {
				continue
			}
			pr.Nodes = append(pr.Nodes, &tailnetproto.DERPMap_Region_Node{
				Name:             n.Name,
				RegionId:         int64(n.RegionID),
				HostName:         n.HostName,
				CertName:         n.CertName,
				Ipv4:             n.IPv4,
				Ipv6:             n.IPv6,
				StunPort:         int32(n.STUNPort),
				StunOnly:         n.STUNOnly,
				DerpPort:         int32(n.DERPPort),
				InsecureForTests: n.InsecureForTests,
				StunTestIp:       n.STUNTestIP,
				CanPort_80:       n.CanPort80,
			})
		}
		out.Regions[int64(id)] = pr
	}
	return out
}

// DERPMapFromProto decodes a streamed DERP map. The fork-only fields
// embedded_relay and force_http have no upstream counterpart and are dropped.
func DERPMapFromProto(p *tailnetproto.DERPMap) *tailcfg.DERPMap {
	if p == nil {
		return nil
	}
	out := &tailcfg.DERPMap{Regions: make(map[int]*tailcfg.DERPRegion, len(p.GetRegions()))}
	if scores := p.GetHomeParams().GetRegionScore(); len(scores) > 0 {
		out.HomeParams = &tailcfg.DERPHomeParams{RegionScore: make(map[int]float64, len(scores))}
		for id, score := range scores {
			out.HomeParams.RegionScore[int(id)] = score
		}
	}
	for id, pr := range p.GetRegions() {
		if pr == nil {
			continue
		}
		r := &tailcfg.DERPRegion{
			RegionID:        int(pr.GetRegionId()),
			RegionCode:      pr.GetRegionCode(),
			RegionName:      pr.GetRegionName(),
			NoMeasureNoHome: pr.GetAvoid(),
		}
		for _, pn := range pr.GetNodes() {
			if pn == nil {
				continue
			}
			r.Nodes = append(r.Nodes, &tailcfg.DERPNode{
				Name:             pn.GetName(),
				RegionID:         int(pn.GetRegionId()),
				HostName:         pn.GetHostName(),
				CertName:         pn.GetCertName(),
				IPv4:             pn.GetIpv4(),
				IPv6:             pn.GetIpv6(),
				STUNPort:         int(pn.GetStunPort()),
				STUNOnly:         pn.GetStunOnly(),
				DERPPort:         int(pn.GetDerpPort()),
				InsecureForTests: pn.GetInsecureForTests(),
				STUNTestIP:       pn.GetStunTestIp(),
				CanPort80:        pn.GetCanPort_80(),
			})
		}
		out.Regions[int(id)] = r
	}
	return out
}

// uuidBytes returns the 16 raw bytes of id, as the wire carries peer IDs.
func uuidBytes(id [16]byte) []byte {
	b := make([]byte, 16)
	copy(b, id[:])
	return b
}
