package dialer

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
)

// A browser that speaks HTTP/2 to the edge opens websockets with RFC 8441
// extended CONNECT, which has no Sec-WebSocket-Key: the key/accept
// handshake is the HTTP/1.1 upgrade's own. Envoy turns such a stream into
// an HTTP/1.1 upgrade for the dialer but adds no key, and apps (Go's
// websocket libraries among them) refuse an upgrade without one with 400.
// The dialer adds a fresh key for the hop to the app; the app's
// Sec-WebSocket-Accept answers it and Envoy answers the browser's CONNECT
// with 200, which is all RFC 8441 asks of the browser's side.

// addMissingWebsocketKey gives a websocket upgrade without a
// Sec-WebSocket-Key a random one (RFC 6455 §4.1: 16 random bytes, base64).
func addMissingWebsocketKey(in, out *http.Request) {
	if !strings.EqualFold(in.Header.Get("Upgrade"), "websocket") || out.Header.Get("Sec-Websocket-Key") != "" {
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	out.Header.Set("Sec-Websocket-Key", base64.StdEncoding.EncodeToString(b[:]))
}
