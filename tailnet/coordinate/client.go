package coordinate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Options configures the proxy's coordination Client.
type Options struct {
	// URL is the primary's base URL (scheme http or https).
	URL *url.URL
	// ProxyToken is "<proxy id>:<secret>", sent as Coder-External-Proxy-Token.
	ProxyToken string
	// Node is the proxy's tailnet node.
	Node Node

	Logger     *slog.Logger // default slog.Default()
	Clock      Clock        // default RealClock{}
	HTTPClient *http.Client // default http.DefaultClient

	// AgentGone, if set, is called with an agent's ID when the coordinator
	// reports it DISCONNECTED or LOST, after the update is applied and
	// without locks held: connections already open to it may be dead (the
	// dialer drops its pooled idle connections). It must not block.
	AgentGone func(agentID uuid.UUID)

	IdleTimeout   time.Duration // remove tunnels unused this long (30 min)
	SweepInterval time.Duration // how often idle tunnels are looked for (5 min)
	LostTimeout   time.Duration // keep LOST peers this long (15 min)
	ReadyTimeout  time.Duration // proceed without ready_for_handshake after (5 s)
	MinBackoff    time.Duration // first reconnect delay (1 s)
	MaxBackoff    time.Duration // reconnect delay cap (30 s)
}

// Stats are counters and gauges for health and metrics.
type Stats struct {
	Connected       bool
	Tunnels         int    // agents with a tunnel
	ReadyTunnels    int    // of which ready to dial
	OpenConnections int    // held EnsureTunnel releases
	Sessions        uint64 // coordinator connections established so far
	DERPMaps        uint64 // DERP maps received
	Sweeps          uint64 // idle sweeps done
}

// Client is the proxy's side of tailnet coordination: a pure tunnel source
// that may tunnel to any agent.
type Client struct {
	stream
	idleTimeout   time.Duration
	sweepInterval time.Duration
}

// New validates opts and starts coordinating in the background until ctx is
// cancelled or Close is called.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.Node == nil {
		return nil, errors.New("coordinate: Options.Node is required")
	}
	if opts.ProxyToken == "" {
		return nil, errors.New("coordinate: Options.ProxyToken is required")
	}
	target, err := endpointURL(opts.URL, ProxyCoordinatePath)
	if err != nil {
		return nil, fmt.Errorf("coordinate: %w", err)
	}
	header := http.Header{}
	header.Set(ProxyTokenHeader, opts.ProxyToken)
	cfg := baseConfig(roleProxy, target, header, opts.Node, opts.Logger, opts.Clock, opts.HTTPClient,
		opts.LostTimeout, opts.ReadyTimeout, opts.MinBackoff, opts.MaxBackoff)
	cfg.peerGone = opts.AgentGone
	cl := &Client{
		idleTimeout:   orDefault(opts.IdleTimeout, DefaultIdleTimeout),
		sweepInterval: orDefault(opts.SweepInterval, DefaultSweepInterval),
	}
	cl.c = newCoordination(ctx, cfg)
	// Created before the goroutine starts so that a fake clock sees it.
	t := cfg.clock.NewTimer(cl.sweepInterval)
	cl.c.wg.Add(1)
	go func() {
		defer cl.c.wg.Done()
		cl.sweepLoop(t)
	}()
	return cl, nil
}

func baseConfig(r role, target string, header http.Header, node Node, log *slog.Logger, clock Clock, hc *http.Client,
	lost, ready, minB, maxB time.Duration,
) config {
	if log == nil {
		log = slog.Default()
	}
	if clock == nil {
		clock = RealClock{}
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	cfg := config{
		role: r, target: target, header: header, httpClient: hc, node: node, log: log, clock: clock,
		lostTimeout:  orDefault(lost, DefaultLostTimeout),
		readyTimeout: orDefault(ready, DefaultReadyTimeout),
		minBackoff:   orDefault(minB, DefaultMinBackoff),
		maxBackoff:   orDefault(maxB, DefaultMaxBackoff),
	}
	cfg.maxBackoff = max(cfg.maxBackoff, cfg.minBackoff)
	return cfg
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// EnsureTunnel opens a tunnel to agentID on first use (add_tunnel) and waits
// until the agent has acknowledged our node (READY_FOR_HANDSHAKE) or, failing
// that, until ReadyTimeout after its node arrived. The caller must call
// release once the connection it dials is closed; tunnels with no open
// connection for IdleTimeout are removed.
func (cl *Client) EnsureTunnel(ctx context.Context, agentID uuid.UUID) (release func(), err error) {
	c := cl.c
	c.peerMu.Lock()
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing || c.ctx.Err() != nil {
		c.peerMu.Unlock()
		return nil, ErrClosed
	}
	p := c.peers[agentID]
	if p == nil {
		p = newPeer(agentID)
		c.peers[agentID] = p
		c.mu.Lock()
		if c.sess != nil {
			c.sess.enqueue(addTunnelReq(agentID))
		}
		c.mu.Unlock()
		c.log.Debug("coordinate: tunnel added", "agent_id", agentID)
	}
	p.refs++
	p.lastUsed = c.cfg.clock.Now()
	ready, ch := p.ready, p.readyCh
	c.peerMu.Unlock()

	var once sync.Once
	release = func() {
		once.Do(func() {
			c.peerMu.Lock()
			p.refs--
			p.lastUsed = c.cfg.clock.Now()
			c.peerMu.Unlock()
		})
	}
	if ready {
		return release, nil
	}
	select {
	case <-ch:
		return release, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("coordinate: tunnel to agent %s not ready: %w", agentID, ctx.Err())
	case <-c.ctx.Done():
		release()
		return nil, ErrClosed
	}
}

func (cl *Client) sweepLoop(t Timer) {
	c := cl.c
	for {
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		cl.sweep()
		t = c.cfg.clock.NewTimer(cl.sweepInterval)
		c.mu.Lock()
		c.sweeps++
		c.mu.Unlock()
	}
}

// sweep removes tunnels without open connections that were last used
// IdleTimeout ago or earlier.
func (cl *Client) sweep() {
	c := cl.c
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	now := c.cfg.clock.Now()
	for id, p := range c.peers {
		if p.refs > 0 || now.Sub(p.lastUsed) < cl.idleTimeout {
			continue
		}
		c.mu.Lock()
		if c.sess != nil {
			c.sess.enqueue(removeTunnelReq(id))
		}
		c.mu.Unlock()
		if p.applied {
			c.cfg.node.RemovePeer(id)
		}
		p.stopTimers()
		delete(c.peers, id)
		c.log.Debug("coordinate: idle tunnel removed", "agent_id", id)
	}
}

// Stats returns a snapshot of the client's counters.
func (cl *Client) Stats() Stats {
	c := cl.c
	c.peerMu.Lock()
	var s Stats
	for _, p := range c.peers {
		s.Tunnels++
		if p.ready {
			s.ReadyTunnels++
		}
		s.OpenConnections += p.refs
	}
	c.peerMu.Unlock()
	c.mu.Lock()
	s.Connected, s.Sessions, s.DERPMaps, s.Sweeps = c.connected, c.sessions, c.derpMaps, c.sweeps
	c.mu.Unlock()
	return s
}
