//go:build ts_debug_websockets

package tsnode

// websocketDERPCompiled: upstream's derphttp websocket dialer is linked in.
const websocketDERPCompiled = true
