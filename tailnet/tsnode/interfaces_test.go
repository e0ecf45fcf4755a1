package tsnode_test

import (
	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/coordinate"
	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// The node plugs into the dialer, coordination and the dev agent as is.
var (
	_ dialer.AgentDialer   = (*tsnode.Node)(nil)
	_ coordinate.Node      = (*tsnode.Node)(nil)
	_ tailnet.NodeDialer   = (*tsnode.Node)(nil)
	_ devagent.TailnetNode = devagent.TSNode(nil)
)
