// Package tsnode is wsedge's tailnet node: a userspace WireGuard node built on
// upstream tailscale.com (wgengine, magicsock, netstack) with no control
// server. Peers, readiness and the DERP map are fed in by hand, normally by
// tailnet/coordinate directly (both speak tailnet.NodeInfo).
//
// It is the only package of wsedge that imports tailscale.com/wgengine and
// friends; everything else sees a Node with Dial, Listen and peer updates.
//
// Recipe (upstream v1.102.5, see docs/protocol.md#tailnet-interoperability): tsd.NewSystem,
// wgengine.NewUserspaceEngine with a fake TUN, netstack.Create, the engine's
// per-peer lookup functions (SetPeerConfigFunc, SetPeerByIPPacketFunc,
// SetPeerForIPFunc), SetSelfNode + netstack.UpdateNetstackIPs + Reconfig +
// SetFilter, then magicsock SetDERPMap, SetNetworkMap and UpsertPeer /
// RemovePeer per peer. Every inbound TCP flow is intercepted: it reaches a
// Listen listener or is reset, never netstack's default forwarding to the
// host's loopback.
//
// A few upstream behaviours are tailscale debug knobs and therefore global
// to the process: DERP-only mode (TS_DEBUG_NEVER_DIRECT_UDP), websocket DERP
// (TS_DEBUG_DERP_WS_CLIENT, compiled in only with the ts_debug_websockets
// build tag), plain-HTTP DERP (TS_DEBUG_USE_DERP_HTTP) and loopback-only
// endpoints (TS_DEBUG_OMIT_LOCAL_ADDRS). Nodes alive at the same time in one
// process must agree on them (New returns ErrKnobConflict otherwise).
package tsnode
