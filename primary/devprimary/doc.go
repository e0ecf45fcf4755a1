// Package devprimary is an embedded stand-in for a Coder primary (coderd):
// an HTTP server that answers the workspace-proxy API
// (/api/v2/workspaceproxies/me/*), the dashboard side of the app login
// hand-off (auth-redirect with a minimal login page), the reconnecting-PTY
// token endpoint and the agent's tailnet endpoint, backed by a YAML catalog
// of users, workspaces, agents and apps. It signs real app tokens and
// encrypts real smuggled API keys with rotating keys, runs a real v2
// coordinator (devcoord) and polls registered proxies' /healthz-report.
//
// It powers `wsedge dev` and the end-to-end tests. Every status code,
// message and JSON shape follows coderd (see the protocol reference); the
// package deliberately defines its own wire structs instead of importing
// the primary client, so that contract tests check both sides against the
// wire.
package devprimary
