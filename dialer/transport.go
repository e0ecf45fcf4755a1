package dialer

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Upstream connection pool settings.
const (
	// maxIdleConnsPerAgent: one agent serves every user's apps through
	// this dialer, so a browser's six connections are no bound. With a
	// pool of 6, eight concurrent clients made the dialer close and
	// re-dial tailnet connections after most responses (make
	// bench-reference at c=8: dialer CPU per request 1.34× → 1.10× the
	// plain proxy's, which keeps 64).
	maxIdleConnsPerAgent = 64
	idleConnTimeout      = 10 * time.Minute
	// transportIdleEvict drops a whole agent transport unused this long.
	transportIdleEvict = 30 * time.Minute
	sweepInterval      = 5 * time.Minute
)

// transportCache keeps one http.Transport per agent so connections to an
// agent are reused across requests.
type transportCache struct {
	agents          AgentDialer
	dialTimeout     time.Duration
	responseTimeout time.Duration
	now             func() time.Time
	// idleProbeWait is how long a pooled connection idle for
	// idleProbeAfter is read before it is used (syncrt.go).
	idleProbeWait time.Duration
	metrics       *metrics
	// tracer is nil when tracing is off.
	tracer trace.Tracer

	mu sync.Mutex
	m  map[uuid.UUID]*agentTransport
}

// agentTransport is an agent's http.Transport and the pool of the
// synchronous round trip (syncrt.go).
type agentTransport struct {
	t        *http.Transport
	cache    *transportCache
	agentID  uuid.UUID
	lastUsed time.Time // guarded by transportCache.mu

	mu sync.Mutex // guards idle and closed
	// idle connections, the least recently used first.
	idle []*agentConn
	// closed: evicted, connections are no longer pooled.
	closed bool
}

func newTransportCache(agents AgentDialer, dialTimeout, responseTimeout time.Duration, now func() time.Time, m *metrics) *transportCache {
	return &transportCache{agents: agents, dialTimeout: dialTimeout, responseTimeout: responseTimeout, now: now,
		idleProbeWait: idleProbeWait, metrics: m, m: map[uuid.UUID]*agentTransport{}}
}

// get returns the agent's transport, creating it on first use.
func (c *transportCache) get(agentID uuid.UUID) *agentTransport {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.m[agentID]
	if !ok {
		at = &agentTransport{t: c.newTransport(agentID), cache: c, agentID: agentID}
		c.m[agentID] = at
	}
	at.lastUsed = c.now()
	return at
}

// dialAddr dials the agent's port named by addr ("host:port"; the host is
// the agent's and ignored).
func (c *transportCache) dialAddr(ctx context.Context, agentID uuid.UUID, addr string) (net.Conn, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial agent: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial agent: bad port %q: %w", portStr, err)
	}
	return c.dial(ctx, agentID, uint16(port))
}

func (c *transportCache) newTransport(agentID uuid.UUID) *http.Transport {
	return &http.Transport{
		// Never use proxy environment variables for tailnet traffic.
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return c.dialAddr(ctx, agentID, addr)
		},
		// Agents serve apps with whatever certificate they have.
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // tailnet peers, as Coder does
		TLSHandshakeTimeout: c.dialTimeout,
		// An agent that went away never answers on a pooled connection
		// (nothing resets it on the tailnet): bound the wait for headers
		// only, so streamed bodies and websockets are not cut.
		ResponseHeaderTimeout: c.responseTimeout,
		MaxIdleConnsPerHost:   maxIdleConnsPerAgent,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
		// HTTP/1.1 only: websocket upgrades must work on every agent.
		ForceAttemptHTTP2: false,
	}
}

// dial opens a connection to an agent port within the dial timeout. The
// span (a child of the request that needed a new connection) covers the
// tunnel set-up and the TCP handshake through the tailnet.
func (c *transportCache) dial(ctx context.Context, agentID uuid.UUID, port uint16) (_ net.Conn, err error) {
	ctx, span := startSpan(c.tracer, ctx, spanDialAgent, attribute.String("wsedge.agent_id", agentID.String()), attribute.Int("wsedge.agent_port", int(port)))
	defer func() { endSpan(span, err) }()
	ctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	start := time.Now()
	conn, err := c.agents.DialAgent(ctx, agentID, port)
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if ctx.Err() != nil {
			outcome = "timeout"
		}
	}
	c.metrics.dialDuration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("dial agent %s port %d: %w", agentID, port, err)
	}
	return conn, nil
}

// sweep drops transports of agents unused for a long time until ctx ends.
func (c *transportCache) sweep(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.evictIdle(c.now().Add(-transportIdleEvict))
			c.closeExpired(c.now().Add(-idleConnTimeout))
		}
	}
}

// evictIdle drops transports last used before cutoff.
func (c *transportCache) evictIdle(cutoff time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, at := range c.m {
		if at.lastUsed.Before(cutoff) {
			at.closeIdle(true)
			delete(c.m, id)
		}
	}
}

// closeIdleOf closes the agent's idle pooled connections.
func (c *transportCache) closeIdleOf(agentID uuid.UUID) {
	c.mu.Lock()
	at := c.m[agentID]
	c.mu.Unlock()
	if at != nil {
		at.closeIdle(false)
	}
}

func (c *transportCache) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, at := range c.m {
		at.closeIdle(false)
	}
}

// closeExpired closes the synchronous round trip's connections idle
// since before cutoff (http.Transport times its own out).
func (c *transportCache) closeExpired(cutoff time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, at := range c.m {
		at.closeExpired(cutoff)
	}
}
