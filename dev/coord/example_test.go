package devcoord_test

import (
	"context"
	"net/http"
	"net/url"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	devcoord "github.com/wsedge/wsedge/dev/coord"
	"github.com/wsedge/wsedge/tailnet/coordinate"
)

// Mounting the coordinator in a primary: authenticate, then hand over.
func Example() {
	coord := devcoord.New(devcoord.Options{})
	defer coord.Close()
	coord.SetDERPMap(&tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{999: {
		RegionID: 999, RegionCode: "coder", RegionName: "Dev primary",
		Nodes: []*tailcfg.DERPNode{{Name: "999a", RegionID: 999, HostName: "127.0.0.1", DERPPort: 3000, STUNPort: -1}},
	}}})

	proxyID := uuid.New()
	agents := map[string]uuid.UUID{} // agent token -> agent ID
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/workspaceproxies/me/coordinate", func(w http.ResponseWriter, r *http.Request) {
		// ... check Coder-External-Proxy-Token, find the proxy ...
		coord.ServeProxy(w, r, proxyID)
	})
	mux.HandleFunc("GET /api/v2/workspaceagents/me/rpc", func(w http.ResponseWriter, r *http.Request) {
		id, ok := agents[r.Header.Get(coordinate.SessionTokenHeader)]
		if !ok {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		coord.ServeAgent(w, r, id)
	})

	// The dev agent side (node is its tailnet node):
	var node coordinate.Node
	if node != nil {
		primaryURL, _ := url.Parse("http://127.0.0.1:3000")
		agent, _ := coordinate.NewAgent(context.Background(), coordinate.AgentOptions{
			URL: primaryURL, AgentToken: "agent-token", Node: node,
		})
		defer agent.Close()
	}
}
