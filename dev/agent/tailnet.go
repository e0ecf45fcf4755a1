package devagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"

	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/coordinate"
)

// TailnetNode is the agent's tailnet node: coordination drives it and the
// apps listen on its netstack. The dev setup passes a tailnet/tsnode node
// whose only address is tailnet.AgentAddr(agent ID)/128.
type TailnetNode interface {
	coordinate.Node
	Listen(port uint16) (net.Listener, error)
}

// TailnetOptions configures RunTailnet.
type TailnetOptions struct {
	// PrimaryURL is the (dev) primary's base URL.
	PrimaryURL *url.URL
	// AgentToken authenticates the agent to the primary.
	AgentToken string
	// Node is the agent's tailnet node.
	Node TailnetNode
	// HTTPClient dials the primary. Default http.DefaultClient.
	HTTPClient *http.Client
	// Agent is what to serve; its Listen is replaced by Node.Listen.
	Agent Options
}

// ErrWrongAddress reports a node whose addresses do not include the agent's
// tailnet IP; coderd refuses such a node from an agent and proxies dial that
// IP, so serving elsewhere would be unreachable.
var ErrWrongAddress = errors.New("devagent: node does not have the agent's tailnet address")

// RunTailnet coordinates with the primary as the agent (publishing Node and
// accepting every peer that tunnels to it) and serves the apps and the PTY
// on Node until ctx is cancelled.
func RunTailnet(ctx context.Context, opts TailnetOptions) error {
	if opts.Node == nil {
		return errors.New("devagent: TailnetOptions.Node is required")
	}
	want := tailnet.AgentAddr(opts.Agent.AgentID)
	if !slices.ContainsFunc(opts.Node.Self().Addresses, func(p netip.Prefix) bool { return p.Addr() == want }) {
		return fmt.Errorf("%w: want %s", ErrWrongAddress, want)
	}
	a := New(opts.Agent)
	a.opts.Listen = opts.Node.Listen
	if err := a.validate(); err != nil {
		return err
	}
	ac, err := coordinate.NewAgent(ctx, coordinate.AgentOptions{
		URL:        opts.PrimaryURL,
		AgentToken: opts.AgentToken,
		Node:       opts.Node,
		Logger:     a.opts.Logger,
		HTTPClient: opts.HTTPClient,
	})
	if err != nil {
		return fmt.Errorf("devagent: coordinate: %w", err)
	}
	defer ac.Close()
	return a.Run(ctx)
}
