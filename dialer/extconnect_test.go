package dialer

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

// TestWebsocketUpgradeWithoutKeyGetsOne: Envoy turns an HTTP/2 browser's
// RFC 8441 websocket into an HTTP/1.1 upgrade without Sec-WebSocket-Key;
// apps refuse that, so the dialer adds a fresh key. A client's own key is
// kept, and requests that are not websocket upgrades get none.
func TestWebsocketUpgradeWithoutKeyGetsOne(t *testing.T) {
	e := newEnv(t, nil).start()
	addr, heads := rawApp(t)
	e.agents.set(8080, addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	url := "http://" + testAccessHost + "/@alice/dev.main/apps/code/ws"
	keyOf := func(hdr http.Header) string {
		t.Helper()
		resp := e.do("GET", url, tok, hdr)
		resp.Body.Close()
		head := <-heads
		for _, l := range strings.Split(head, "\r\n") {
			if k, ok := strings.CutPrefix(l, "Sec-WebSocket-Key: "); ok {
				return k
			}
		}
		return ""
	}
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}}
	k1, k2 := keyOf(upgrade), keyOf(upgrade)
	if b, err := base64.StdEncoding.DecodeString(k1); err != nil || len(b) != 16 || k1 == k2 {
		t.Errorf("keys %q, %q: want fresh 16-byte base64 keys", k1, k2)
	}
	upgrade.Set("Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if k := keyOf(upgrade); k != "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Errorf("client key replaced by %q", k)
	}
	if k := keyOf(nil); k != "" {
		t.Errorf("plain request got key %q", k)
	}
}
