// Package devprimary is an embedded stand-in for a Coder primary (coderd):
// an HTTP server that answers the workspace-proxy API
// (/api/v2/workspaceproxies/me/*), the dashboard side of the app login
// hand-off (auth-redirect with a minimal login page), the reconnecting-PTY
// token endpoint, a web terminal page per agent (xterm.js, vendored, which
// opens the terminal on the registered workspace proxy) and the agent's
// tailnet endpoint, backed by a YAML catalog of users, workspaces, agents
// and apps. It signs real app tokens and
// encrypts real smuggled API keys with rotating keys, runs a real v2
// coordinator (devcoord) and polls registered proxies' /healthz-report.
//
// Endpoints (all under Options.AccessURL):
//
//	GET  /api/v2/buildinfo
//	POST /api/v2/workspaceproxies/me/register            (proxy token)
//	POST /api/v2/workspaceproxies/me/deregister          (proxy token)
//	GET  /api/v2/workspaceproxies/me/crypto-keys         (proxy token)
//	POST /api/v2/workspaceproxies/me/issue-signed-app-token
//	POST /api/v2/workspaceproxies/me/resolve-app-owner
//	POST /api/v2/workspaceproxies/me/app-stats
//	GET  /api/v2/workspaceproxies/me/coordinate          (websocket)
//	GET  /api/v2/workspaceagents/me/rpc                  (agent token, websocket)
//	GET  /api/v2/applications/auth-redirect              (dashboard session)
//	POST /api/v2/applications/reconnecting-pty-signed-token
//	GET  /login, POST /login                             (demo login page)
//	GET  /                                               (home: the agents' terminal pages, dashboard session)
//	GET  /@<owner>/<workspace>.<agent>/terminal          (web terminal page, dashboard session)
//	GET  /static/…                                       (its scripts: xterm.js, vendored)
//	/derp                                                (Options.DERP, optional)
//
// The catalog format is shown by testdata/demo.yaml, which is also the
// embedded demo (DemoCatalog).
//
// It powers `wsedge dev` and the end-to-end tests. Every status code,
// message and JSON shape follows coderd (see docs/protocol.md); the
// package deliberately defines its own wire structs instead of importing
// the primary client, so that contract tests check both sides against the
// wire.
package devprimary
