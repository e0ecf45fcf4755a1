//go:build ts_debug_websockets

package devagent_test

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// Upstream's websocket DERP dialer uses http.DefaultClient, so it trusts
// only the system roots (tsnode.Options.ExtraRootCAs does not reach it): the
// test trusts the DERP server's certificate there. Not parallel.
func TestTSNodeAgentOverWebsocketDERP(t *testing.T) {
	tr := http.DefaultTransport.(*http.Transport)
	prev := tr.TLSClientConfig
	t.Cleanup(func() { tr.TLSClientConfig = prev })

	tn := newTailnetWith(t, tsnode.Options{DERPOnly: true, ForceWebsocketDERP: true}, func(roots *tls.Config) {
		tr.TLSClientConfig = roots
	})
	checkApps(t, tn.proxy, tn.agent.ID)
	if n := tn.derp.Websockets.Load(); n < 2 {
		t.Fatalf("%d websocket DERP connections, want the proxy's and the agent's", n)
	}
	if st, _ := tn.proxy.Node.PeerStatus(tn.agent.ID); st.Direct.IsValid() {
		t.Fatalf("direct path %v in DERP-only mode", st.Direct)
	}
}
