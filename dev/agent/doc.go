// Package devagent is wsedge's stand-in workspace agent for development and
// end-to-end tests. It serves demo apps (a plain HTTP app that reports what it
// received, a websocket echo app and the same demo app over HTTPS for Coder's
// "s" ports) and a reconnecting-PTY server speaking the agent side of Coder's
// reconnecting-PTY protocol on port 2.
//
// Everything is served from listeners obtained through Options.Listen, so
// tests run it on loopback TCP while the dev setup serves it on a tailnet
// node's netstack.
package devagent
