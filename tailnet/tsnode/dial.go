package tsnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/wsedge/wsedge/tailnet"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/types/nettype"
)

// ErrPeerNotReady wraps the context error of a Dial that gave up waiting for
// the agent's node (or its readiness) to arrive.
var ErrPeerNotReady = errors.New("tsnode: peer not ready")

// Dial opens a TCP connection through the tailnet to port on the agent's
// address (AgentAddr). It first waits, bounded by ctx, until the agent is a
// known peer marked ready (MarkPeerReady), so the first WireGuard handshake
// is not sent before the agent has our node (which would cost wireguard-go's
// 5 s retry).
func (n *Node) Dial(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error) {
	if err := n.waitReady(ctx, agentID); err != nil {
		return nil, err
	}
	dst := netip.AddrPortFrom(tailnet.AgentAddr(agentID), port)
	fresh := n.primePath(ctx, agentID, dst.Addr())
	c, err := n.dialTCP(ctx, agentID, dst, n.synTimeout(agentID, fresh))
	if err != nil {
		return nil, fmt.Errorf("tsnode: dial %s: %w", dst, err)
	}
	return c, nil
}

// A SYN whose 4-tuple is still in TIME-WAIT on the agent is dropped
// silently by gVisor's netstack (TIME-WAIT is recycled only for listening
// endpoints, and netstack serves agents through a forwarder), and the
// agent is the side in TIME-WAIT whenever it closed first — a websocket
// server does. netstack picks our ephemeral port at random (RFC 6056
// algorithm 1) and tailscale gives us no way to choose it, so a dial hits
// a port the agent still holds with a probability of (agent's TIME-WAIT
// connections to us) / 49,536: a few percent under websocket churn. TCP
// would retransmit that SYN from the same port for the whole dial timeout.
// A handshake that gets no answer is therefore abandoned and tried again
// from a new port, after a timeout that follows the peer's measured
// handshake time:
//
//	attempt timeout = clamp(4 × srtt + synSlack, synMinTimeout, synAttemptTimeout)
//
// doubling on each further attempt. synAttemptTimeout alone applies while
// the peer has no measurement or its WireGuard session is not fresh (the
// SYN may then wait for a WireGuard handshake). The path is primed before
// the first attempt, so one round trip is all a handshake needs.
const (
	synAttemptTimeout = 1500 * time.Millisecond
	synMinTimeout     = 250 * time.Millisecond
	synSlack          = 150 * time.Millisecond
)

// synTimeout is the first attempt's timeout for a dial to the peer; fresh
// says whether its WireGuard session is fresh.
func (n *Node) synTimeout(agentID uuid.UUID, fresh bool) time.Duration {
	if !fresh {
		return synAttemptTimeout
	}
	n.mu.Lock()
	var srtt time.Duration
	if p := n.peers[agentID]; p != nil {
		srtt = p.srtt
	}
	n.mu.Unlock()
	if srtt == 0 {
		return synAttemptTimeout
	}
	return min(max(4*srtt+synSlack, synMinTimeout), synAttemptTimeout)
}

// observeHandshake folds the handshake time of a first-attempt dial into
// the peer's srtt (RFC 6298's 1/8 gain).
func (n *Node) observeHandshake(agentID uuid.UUID, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[agentID]
	if p == nil {
		return
	}
	if p.srtt == 0 {
		p.srtt = d
		return
	}
	p.srtt += (d - p.srtt) / 8
}

// DialRetries is how many TCP handshakes were abandoned and retried from a
// new port since the node started.
func (n *Node) DialRetries() int64 { return n.dialRetries.Load() }

func (n *Node) dialTCP(ctx context.Context, agentID uuid.UUID, dst netip.AddrPort, wait time.Duration) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, wait)
		start := time.Now()
		c, err := n.ns.DialContextTCPWithBind(actx, n.addr, dst)
		took := time.Since(start)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil {
			if attempt == 0 {
				n.observeHandshake(agentID, took)
			}
			return withReadiness(c), nil
		}
		if ctx.Err() != nil || !timedOut {
			return nil, err
		}
		n.dialRetries.Add(1)
		wait *= 2
	}
}

// Path priming: without a WireGuard session, the first handshake packet is
// lost if the agent's DERP connection is still being set up (it advertises
// its home region as soon as it picks one), and wireguard-go only retries
// after 5 s. Disco pings are cheap and retried quickly, so ping until one
// answers (bounded) before letting TCP start the handshake.
const (
	primeAttempts = 10
	primeWait     = 300 * time.Millisecond
	// sessionFresh: a handshake this recent means the path works.
	sessionFresh = 2 * time.Minute
)

// primePath reports whether the peer's WireGuard session was fresh
// already (no priming needed).
func (n *Node) primePath(ctx context.Context, agentID uuid.UUID, ip netip.Addr) (fresh bool) {
	n.mu.Lock()
	p := n.peers[agentID]
	var k key.NodePublic
	if p != nil {
		k = p.info.Key
	}
	n.mu.Unlock()
	if p == nil {
		return false
	}
	if wp, ok := n.eng.PeerByKey(k); ok && time.Since(wp.LastHandshake()) < sessionFresh {
		return true
	}
	for i := 0; i < primeAttempts; i++ {
		got := make(chan struct{}, 4)
		n.eng.Ping(ip, tailcfg.PingDisco, 0, func(*ipnstate.PingResult) {
			select {
			case got <- struct{}{}:
			default:
			}
		})
		t := time.NewTimer(primeWait)
		select {
		case <-got:
			// A pong, or an error (unknown peer, for one) that retrying
			// quickly will not change.
			t.Stop()
			return false
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-n.closedCh:
			t.Stop()
			return false
		}
	}
	return false
}

// DialAgent is Dial under the name dialer.AgentDialer uses.
func (n *Node) DialAgent(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error) {
	return n.Dial(ctx, agentID, port)
}

func (n *Node) waitReady(ctx context.Context, id uuid.UUID) error {
	for {
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return ErrClosed
		}
		p := n.peers[id]
		ready := p != nil && p.ready
		ch := n.changed
		n.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-n.closedCh:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("%w: agent %s: %w", ErrPeerNotReady, id, ctx.Err())
		}
	}
}

// Listen accepts TCP connections from peers to port on the node's own
// address (agents serve their apps this way). One listener per port.
func (n *Node) Listen(port uint16) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if n.listeners[port] != nil {
		return nil, fmt.Errorf("tsnode: listen on port %d: %w", port, errAddrInUse)
	}
	ln := &listener{
		n:     n,
		port:  port,
		addr:  &net.TCPAddr{IP: n.addr.AsSlice(), Port: int(port)},
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
	n.listeners[port] = ln
	return ln, nil
}

var errAddrInUse = errors.New("address already in use")

// tcpHandlerForFlow intercepts every inbound TCP flow: it goes to a
// listener or is reset. Returning intercept=false would let netstack
// forward the flow to the host's loopback.
func (n *Node) tcpHandlerForFlow(_, dst netip.AddrPort) (func(net.Conn), bool) {
	if dst.Addr() != n.addr {
		return nil, true
	}
	n.mu.Lock()
	ln := n.listeners[dst.Port()]
	n.mu.Unlock()
	if ln == nil {
		return nil, true
	}
	return ln.deliver, true
}

// udpHandlerForFlow drops all inbound UDP: (which
// nothing is served over tailnet UDP.
func (n *Node) udpHandlerForFlow(_, _ netip.AddrPort) (func(nettype.ConnPacketConn), bool) {
	return nil, true
}

type listener struct {
	n     *Node
	port  uint16
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *listener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.n.mu.Lock()
		if l.n.listeners[l.port] == l {
			delete(l.n.listeners, l.port)
		}
		l.n.mu.Unlock()
	})
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }
