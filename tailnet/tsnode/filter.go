package tsnode

import (
	"net/netip"

	"github.com/wsedge/wsedge/tailnet"
	"go4.org/netipx"
	"tailscale.com/types/ipproto"
	"tailscale.com/types/logger"
	"tailscale.com/types/views"
	"tailscale.com/wgengine/filter"
)

// inboundFilter lets peers in the service prefix open TCP connections and
// send pings to self; replies to our own outbound flows pass through the
// filter's connection tracking. Which ports answer is decided by Listen
// (everything else is reset by netstack).
func inboundFilter(self netip.Prefix, logf logger.Logf) *filter.Filter {
	ms := []filter.Match{{
		IPProto: views.SliceOf([]ipproto.Proto{ipproto.TCP, ipproto.ICMPv6}),
		Srcs:    []netip.Prefix{tailnet.ServicePrefix},
		Dsts:    []filter.NetPortRange{{Net: self, Ports: filter.PortRange{First: 0, Last: 65535}}},
	}}
	var b netipx.IPSetBuilder
	b.AddPrefix(self)
	local, _ := b.IPSet()
	return filter.New(ms, nil, local, local, nil, logf)
}
