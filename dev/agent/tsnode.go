package devagent

import (
	"net"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/coordinate"
	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// NewTSNode starts a real tailnet node (tailnet/tsnode) at the agent's
// tailnet address, ready to be passed to RunTailnet through TSNode.
func NewTSNode(agentID uuid.UUID, opts tsnode.Options) (*tsnode.Node, error) {
	opts.Address = tailnet.AgentAddr(agentID)
	return tsnode.New(opts)
}

// TSNode adapts a tailnet/tsnode node as the agent's TailnetNode.
func TSNode(n *tsnode.Node) TailnetNode {
	return tsTailnetNode{Node: n, n: n}
}

type tsTailnetNode struct {
	coordinate.Node
	n *tsnode.Node
}

func (t tsTailnetNode) Listen(port uint16) (net.Listener, error) { return t.n.Listen(port) }
