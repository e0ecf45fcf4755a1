// Package coordinate is wsedge's client for Coder's tailnet coordination
// protocol (v2): a websocket to the primary, yamux on top of it (we are the
// yamux client) and DRPC service coder.tailnet.v2.Tailnet over yamux, one
// yamux stream per RPC. Two RPCs are used: Coordinate (a bidirectional stream
// of node and tunnel messages) and StreamDERPMaps.
//
// Two roles are provided:
//
//   - Client is the workspace proxy's side (a pure tunnel source). It dials
//     /api/v2/workspaceproxies/me/coordinate with the proxy token, opens a
//     tunnel to an agent on first use (EnsureTunnel), re-adds every tunnel
//     after a reconnect, removes tunnels idle for 30 minutes and waits for the
//     agent's READY_FOR_HANDSHAKE before letting the caller dial.
//   - AgentClient is a workspace agent's side (a pure tunnel destination). It
//     dials /api/v2/workspaceagents/me/rpc with the agent token, publishes its
//     node, accepts every peer that tunnels to it and answers each NODE with
//     ready_for_handshake, as Coder agents do.
//
// Both drive a local tailnet node through the Node interface, reconnect with
// backoff, publish the node again on every change, and keep peers that the
// coordinator reports LOST (or that were known when the coordinator connection
// dropped) for LostTimeout, so that established WireGuard sessions survive a
// coordinator outage; DISCONNECTED peers are removed at once.
package coordinate
