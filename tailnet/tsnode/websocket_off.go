//go:build !ts_debug_websockets

package tsnode

// websocketDERPCompiled: upstream's derphttp websocket dialer is only linked
// in with the ts_debug_websockets build tag.
const websocketDERPCompiled = false
