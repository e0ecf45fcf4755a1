package tailnet

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/google/uuid"
)

// Tunnels opens coordination tunnels to agents; tailnet/coordinate's Client
// implements it. release must be called once the connection that needed
// the tunnel is closed, so idle tunnels can be removed.
type Tunnels interface {
	EnsureTunnel(ctx context.Context, agentID uuid.UUID) (release func(), err error)
}

// NodeDialer dials a port of an agent through the tailnet node once its
// tunnel is up; tailnet/tsnode's Node implements it.
type NodeDialer interface {
	Dial(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error)
}

// Dialer is the dialer.AgentDialer of a real deployment: it makes sure the
// primary's coordinator has a tunnel between us and the agent, then dials
// through the tailnet node. The tunnel is held while the connection is
// open.
type Dialer struct {
	Tunnels Tunnels
	Node    NodeDialer
}

// DialAgent implements dialer.AgentDialer.
func (d Dialer) DialAgent(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error) {
	release, err := d.Tunnels.EnsureTunnel(ctx, agentID)
	if err != nil {
		return nil, fmt.Errorf("tunnel to agent %s: %w", agentID, err)
	}
	conn, err := d.Node.Dial(ctx, agentID, port)
	if err != nil {
		release()
		return nil, fmt.Errorf("dial agent %s port %d: %w", agentID, port, err)
	}
	return &tunnelConn{Conn: conn, release: release}, nil
}

// tunnelConn releases its tunnel once, on the first Close.
type tunnelConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *tunnelConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
