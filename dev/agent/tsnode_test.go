package devagent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/internal/testutil/tailnettest"
	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// tailnet is a DERP server, a primary, a dev agent on a real tsnode and a
// proxy tsnode driven by tailnet/coordinate, all with the same node options.
type tailnet struct {
	derp    *tailnettest.DERP
	primary *tailnettest.Primary
	agent   *tailnettest.Agent
	proxy   *tailnettest.Proxy
}

func newTailnet(t *testing.T, opts tsnode.Options) *tailnet {
	t.Helper()
	return newTailnetWith(t, opts, nil)
}

// newTailnetWith calls trust with a TLS config trusting the DERP server
// before any node starts.
func newTailnetWith(t *testing.T, opts tsnode.Options, trust func(*tls.Config)) *tailnet {
	t.Helper()
	d := tailnettest.NewDERP(t, nil)
	if trust != nil {
		trust(&tls.Config{RootCAs: d.Roots})
	}
	opts.ExtraRootCAs = d.Roots
	opts.LoopbackOnly = true
	p := tailnettest.NewPrimary(t, d.Map())
	return &tailnet{
		derp:    d,
		primary: p,
		agent:   p.StartAgent(t, uuid.Nil, opts),
		proxy:   p.StartProxy(t, opts),
	}
}

// checkApps fetches the demo app and talks to the websocket echo app of the
// agent through the proxy's node.
func checkApps(t *testing.T, px *tailnettest.Proxy, agentID uuid.UUID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := px.HTTPClient(agentID, 8080)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:8080/echo?q=1", bytes.NewReader(make([]byte, 100_000)))
	req.Header.Set("X-Test", "through-the-tailnet")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST /echo through the tailnet: %v", err)
	}
	var got devagent.Received
	err = json.NewDecoder(res.Body).Decode(&got)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("POST /echo = %d, decode error %v", res.StatusCode, err)
	}
	if got.Method != http.MethodPost || got.RawQuery != "q=1" || got.BodyBytes != 100_000 || got.Headers["X-Test"][0] != "through-the-tailnet" {
		t.Fatalf("the app received %+v", got)
	}

	res, err = hc.Get("http://127.0.0.1:8080/bytes?n=1000000")
	if err != nil {
		t.Fatalf("GET /bytes: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !bytes.Equal(body, devagent.PatternBytes(1_000_000)) {
		t.Fatalf("GET /bytes: %d bytes, err %v; want the 1 MB pattern", len(body), err)
	}

	ws, _, err := websocket.Dial(ctx, "ws://127.0.0.1:8081/", &websocket.DialOptions{HTTPClient: px.HTTPClient(agentID, 8081)})
	if err != nil {
		t.Fatalf("websocket to the echo app: %v", err)
	}
	defer ws.CloseNow()
	for _, msg := range []string{"hello", string(devagent.PatternBytes(20_000))} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		typ, b, err := ws.Read(ctx)
		if err != nil || typ != websocket.MessageText || string(b) != msg {
			t.Fatalf("echo of %d bytes: type %v, %d bytes, err %v", len(msg), typ, len(b), err)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

func TestTSNodeAgentOverDERPOnly(t *testing.T) {
	tn := newTailnet(t, tsnode.Options{DERPOnly: true})
	checkApps(t, tn.proxy, tn.agent.ID)
	st, ok := tn.proxy.Node.PeerStatus(tn.agent.ID)
	if !ok || st.Direct.IsValid() || st.LastHandshake.IsZero() || !st.Ready {
		t.Fatalf("path to the agent %+v (known %v), want a ready peer reached through DERP", st, ok)
	}
}

func TestTSNodeAgentOverDirectUDP(t *testing.T) {
	tn := newTailnet(t, tsnode.Options{})
	checkApps(t, tn.proxy, tn.agent.ID)
	waitDirect(t, tn.proxy, tn.agent.ID)
	checkApps(t, tn.proxy, tn.agent.ID)
}

// waitDirect waits until the proxy reaches the agent over direct UDP on
// loopback (traffic drives magicsock's path discovery).
func waitDirect(t *testing.T, px *tailnettest.Proxy, agentID uuid.UUID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _ := px.Node.PeerStatus(agentID)
		if st.Direct.IsValid() {
			if !st.Direct.Addr().IsLoopback() {
				t.Fatalf("direct path to %v, want loopback", st.Direct)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no direct UDP path to the agent: %+v", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if c, err := px.Dial(ctx, agentID, 8080); err == nil {
			c.Close()
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
}
