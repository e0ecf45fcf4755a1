// Package devcoord is the dev primary's tailnet coordinator: an in-memory
// implementation of Coder's v2 coordination protocol (DRPC service
// coder.tailnet.v2.Tailnet over yamux over a websocket) with the semantics of
// coderd's in-memory coordinator. Tunnel sources (proxies) add tunnels to
// destinations (agents); the coordinator relays each side's node to the other,
// relays ready_for_handshake from destination to source, tells tunnel peers
// DISCONNECTED on a graceful leave and LOST when a stream just breaks, and
// streams the DERP map its owner gives it.
//
// It serves two endpoints, mounted by dev/primary after authenticating
// the caller: the proxy endpoint (coderd's
// /api/v2/workspaceproxies/me/coordinate, where the proxy may tunnel to any
// agent and gets a fresh peer ID per connection, as coderd does) and the agent
// endpoint (the tailnet part of coderd's /api/v2/workspaceagents/me/rpc, where
// the peer ID is the agent ID, tunnels may not be opened and the node's
// addresses must be the agent's tailnet IP).
package devcoord
