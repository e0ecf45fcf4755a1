package tsnode_test

import (
	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/dialer/coordinate"
	"github.com/wsedge/wsedge/dialer/tsnode"
	"github.com/wsedge/wsedge/primary/devagent"
)

// The node plugs into the dialer, coordination and the dev agent as is.
var (
	_ dialer.AgentDialer                 = (*tsnode.Node)(nil)
	_ coordinate.NodeOf[tsnode.NodeInfo] = (*tsnode.Node)(nil)
	_ devagent.TailnetNode               = devagent.TSNode(nil)
)
