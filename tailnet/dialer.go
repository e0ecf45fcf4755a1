package tailnet

import (
	"context"
	"errors"
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
	tc := &tunnelConn{Conn: conn, release: release}
	if rc, ok := conn.(ReadinessConn); ok {
		return &readinessTunnelConn{tunnelConn: tc, rc: rc}, nil
	}
	return tc, nil
}

// ErrWouldBlock is ReadNow's answer when nothing has arrived.
var ErrWouldBlock = errors.New("tailnet: nothing to read yet")

// ReadinessConn is a connection that says when it has something to read,
// so that a reader waiting on an idle connection need not hold a
// goroutine (tailnet/tsnode's connections are).
type ReadinessConn interface {
	net.Conn
	// NotifyReadable calls f whenever the connection may have turned
	// readable: bytes arrived, the peer closed its side, the connection
	// failed or was closed. f runs on the network stack's goroutine: it
	// must return at once, and may be called when a read would still
	// find nothing. stop unregisters f (a call in flight may still end
	// after stop returns).
	NotifyReadable(f func()) (stop func())
	// ReadNow reads what has arrived without waiting: (0, ErrWouldBlock)
	// when nothing has, io.EOF once the peer's close has been read.
	ReadNow(p []byte) (int, error)
}

// CloseWrite half-closes the connection when the node's connection can.
func (c *tunnelConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("tailnet: CloseWrite: %w", errors.ErrUnsupported)
}

// readinessTunnelConn is a tunnelConn whose connection is a ReadinessConn.
type readinessTunnelConn struct {
	*tunnelConn
	rc ReadinessConn
}

func (c *readinessTunnelConn) NotifyReadable(f func()) (stop func()) { return c.rc.NotifyReadable(f) }

func (c *readinessTunnelConn) ReadNow(p []byte) (int, error) { return c.rc.ReadNow(p) }

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
