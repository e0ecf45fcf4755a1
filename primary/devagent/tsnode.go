package devagent

import (
	"net"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/dialer/coordinate"
	"github.com/wsedge/wsedge/dialer/tsnode"
)

// NewTSNode starts a real tailnet node (dialer/tsnode) at the agent's
// tailnet address, ready to be passed to RunTailnet through TSNode.
func NewTSNode(agentID uuid.UUID, opts tsnode.Options) (*tsnode.Node, error) {
	opts.Address = TailnetIP(agentID)
	return tsnode.New(opts)
}

// TSNode adapts a dialer/tsnode node as the agent's TailnetNode.
func TSNode(n *tsnode.Node) TailnetNode {
	return tsTailnetNode{Node: coordinate.AdaptNode[tsnode.NodeInfo](n), n: n}
}

type tsTailnetNode struct {
	coordinate.Node
	n *tsnode.Node
}

func (t tsTailnetNode) Listen(port uint16) (net.Listener, error) { return t.n.Listen(port) }
