package coordinate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/google/uuid"
)

// AgentOptions configures an AgentClient.
type AgentOptions struct {
	// URL is the primary's base URL.
	URL *url.URL
	// AgentToken is the agent's session token, sent as Coder-Session-Token.
	AgentToken string
	// Node is the agent's tailnet node. Its addresses must be the agent's
	// tailnet IP (fd7a:115c:a1e0:<agent uuid bytes 6..15>/128): coderd
	// rejects any other address from an agent.
	Node Node

	Logger      *slog.Logger
	Clock       Clock
	HTTPClient  *http.Client
	LostTimeout time.Duration
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
}

// AgentClient is a workspace agent's side of tailnet coordination. It dials
// /api/v2/workspaceagents/me/rpc?version=2.0 (the path shape of coderd's
// agent RPC endpoint, where the tailnet service shares one DRPC mux with the
// agent API) and, like Coder agents, never opens tunnels: it publishes its
// node, installs every peer that tunnels to it, marks it ready at once and
// answers each NODE with ready_for_handshake.
type AgentClient struct {
	stream
}

// NewAgent validates opts and starts coordinating until ctx is cancelled or
// Close is called.
func NewAgent(ctx context.Context, opts AgentOptions) (*AgentClient, error) {
	if opts.Node == nil {
		return nil, errors.New("coordinate: AgentOptions.Node is required")
	}
	if opts.AgentToken == "" {
		return nil, errors.New("coordinate: AgentOptions.AgentToken is required")
	}
	target, err := endpointURL(opts.URL, AgentRPCPath)
	if err != nil {
		return nil, fmt.Errorf("coordinate: %w", err)
	}
	header := http.Header{}
	header.Set(SessionTokenHeader, opts.AgentToken)
	cfg := baseConfig(roleAgent, target, header, opts.Node, opts.Logger, opts.Clock, opts.HTTPClient,
		opts.LostTimeout, 0, opts.MinBackoff, opts.MaxBackoff)
	return &AgentClient{stream{newCoordination(ctx, cfg)}}, nil
}

// Peers lists the peers currently installed on the node, sorted.
func (a *AgentClient) Peers() []uuid.UUID {
	a.c.peerMu.Lock()
	defer a.c.peerMu.Unlock()
	out := make([]uuid.UUID, 0, len(a.c.peers))
	for id, p := range a.c.peers {
		if p.applied {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
