// Package tailnet is the leaf of the tailnet wing: the types and addresses
// that the node (tailnet/tsnode), the coordination client
// (tailnet/coordinate), the dialer and the agent stand-in all share, so
// none of them has to import another to agree on them.
//
// Bytes enter the tailnet through Dialer: it holds a coordination tunnel to
// the agent while a connection dialled through the node is open.
package tailnet

import (
	"net/netip"
	"time"

	"github.com/google/uuid"
	"tailscale.com/types/key"
)

// ServicePrefix is the Tailscale service prefix every address of a Coder
// tailnet lives in.
var ServicePrefix = netip.MustParsePrefix("fd7a:115c:a1e0::/48")

// CoderPrefix is the older Coder prefix agents may still advertise besides
// their ServicePrefix address.
var CoderPrefix = netip.MustParsePrefix("fd60:627a:a42b::/48")

// AgentAddr is an agent's tailnet address: ServicePrefix followed by bytes
// 6..15 of its UUID (docs/protocol.md#agent-address).
func AgentAddr(agentID uuid.UUID) netip.Addr { return AgentAddrIn(ServicePrefix, agentID) }

// AgentAddrIn puts bytes 6..15 of an agent's UUID behind a /48 prefix.
func AgentAddrIn(prefix netip.Prefix, agentID uuid.UUID) netip.Addr {
	b := prefix.Addr().As16()
	copy(b[6:], agentID[6:])
	return netip.AddrFrom16(b)
}

// NodeInfo is one tailnet node as coordination relays it: our own node
// (published with update_self) or a peer's (received in a NODE update).
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
