package derp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	"github.com/wsedge/wsedge/derp"
	"github.com/wsedge/wsedge/internal/testutil/tailnettest"
	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// Two dialer replicas serve the same DERP region and mesh with each other.
// The proxy's node is homed on replica A, the agent's on replica B: packets
// cross the mesh in both directions.
func TestTailnetAcrossMeshedReplicas(t *testing.T) {
	const coderMeshKey = "0123456789abcdefghijklmnopqrstuv"
	roots := x509.NewCertPool()
	meshTLS := &tls.Config{RootCAs: roots}
	newRelay := func() (*derp.Server, *tailnettest.DERP) {
		s, err := derp.New(derp.Options{Logger: tailnettest.Logger(), MeshKey: coderMeshKey, MeshTLSConfig: meshTLS})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s, tailnettest.NewDERP(t, s)
	}
	a, srvA := newRelay()
	b, srvB := newRelay()
	roots.AddCert(srvA.Server.Certificate())
	roots.AddCert(srvB.Server.Certificate())
	if err := a.SetMeshPeers([]string{srvB.Server.URL}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeshPeers([]string{srvA.Server.URL}); err != nil {
		t.Fatal(err)
	}

	region := func(d *tailnettest.DERP) *tailcfg.DERPMap {
		return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: d.Region(1)}}
	}
	agentID, proxyID := uuid.New(), uuid.New()
	base := tsnode.Options{Logger: tailnettest.Logger(), ExtraRootCAs: roots, DERPOnly: true, LoopbackOnly: true}
	popts := base
	popts.DERPMap = region(srvA)
	proxy, err := tsnode.New(popts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	aopts := base
	aopts.DERPMap = region(srvB)
	aopts.Address = tailnet.AgentAddr(agentID)
	agent, err := tsnode.New(aopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })

	if err := proxy.UpsertPeer(agentID, waitHome(t, agent)); err != nil {
		t.Fatal(err)
	}
	if err := agent.UpsertPeer(proxyID, waitHome(t, proxy)); err != nil {
		t.Fatal(err)
	}
	proxy.MarkPeerReady(agentID)
	agent.MarkPeerReady(proxyID)

	ln, err := agent.Listen(8080)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "agent on replica B saw %s", r.URL.Path)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return proxy.Dial(ctx, agentID, 8080)
		},
		DisableKeepAlives: true,
	}, Timeout: 30 * time.Second}
	res, err := hc.Get("http://agent/through-the-mesh")
	if err != nil {
		t.Fatalf("GET across the mesh: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(body) != "agent on replica B saw /through-the-mesh" {
		t.Fatalf("GET across the mesh = %d %q", res.StatusCode, body)
	}
	if srvA.Websockets.Load() != 0 || srvB.Websockets.Load() != 0 {
		t.Fatal("unexpected websocket DERP connections")
	}
}

func waitHome(t *testing.T, n *tsnode.Node) tailnet.NodeInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := n.Self(); s.PreferredDERP != 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatal("node has no home DERP region")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
