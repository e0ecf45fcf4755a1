package tsnode

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"tailscale.com/net/dns"
	"tailscale.com/net/tsdial"
	"tailscale.com/tailcfg"
	"tailscale.com/tsd"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
	"tailscale.com/types/netmap"
	"tailscale.com/types/views"
	"tailscale.com/wgengine"
	"tailscale.com/wgengine/magicsock"
	"tailscale.com/wgengine/netstack"
	"tailscale.com/wgengine/router"
	"tailscale.com/wgengine/wgcfg"
)

// ServicePrefix is the Tailscale service prefix every address of the tailnet
// lives in (docs/protocol.md#agent-address).
var ServicePrefix = netip.MustParsePrefix("fd7a:115c:a1e0::/48")

// ErrClosed is returned by operations on a closed node.
var ErrClosed = errors.New("tsnode: node closed")

// ErrBadAddress reports an Options.Address outside ServicePrefix.
var ErrBadAddress = errors.New("tsnode: address not in fd7a:115c:a1e0::/48")

// Options configures a Node. The zero value is a proxy-side node with a
// random address that finds direct UDP paths and relays through DERP.
type Options struct {
	// Logger receives the node's own logs; tailscale's internal logs go to
	// it at debug level. Default slog.Default().
	Logger *slog.Logger
	// Address is the node's tailnet address. Zero picks
	// fd7a:115c:a1e0: + 10 random bytes. Agents use AgentAddr(agent ID).
	Address netip.Addr
	// DERPMap is installed at start; SetDERPMap replaces it later.
	DERPMap *tailcfg.DERPMap
	// ListenPort is the UDP port for WireGuard and disco; 0 picks one.
	ListenPort uint16
	// DERPOnly never uses direct UDP paths: no endpoints are advertised,
	// peers' endpoints are ignored and disco pings go over DERP only
	// (Coder's "block direct"). Process-wide (see the package comment).
	DERPOnly bool
	// ForceWebsocketDERP reaches DERP servers over websockets instead of the
	// HTTP Upgrade: DERP handshake. Needs the ts_debug_websockets build tag.
	// Upstream's websocket dialer uses http.DefaultClient, so ExtraRootCAs
	// do not apply to it. Process-wide (see the package comment).
	ForceWebsocketDERP bool
	// PlainHTTPDERP reaches DERP servers over plain HTTP on their DERPPort
	// instead of TLS (upstream ignores the fork's per-node ForceHTTP; this
	// is its TS_DEBUG_USE_DERP_HTTP). For a dev primary on http://. It also
	// turns https:// DERP mesh clients in the process to plain HTTP.
	// Process-wide (see the package comment).
	PlainHTTPDERP bool
	// LoopbackOnly advertises 127.0.0.1:<UDP port> as the only endpoint and
	// omits interface addresses, so that tests send nothing off loopback.
	// Process-wide (see the package comment).
	LoopbackOnly bool
	// RemoveGrace is how long a removed peer's WireGuard state is kept in
	// case its key comes back under a new peer ID (default 5 s).
	RemoveGrace time.Duration
	// ExtraRootCAs are trusted, besides the system roots, for DERP servers'
	// TLS certificates (a private CA, or httptest's certificate in tests).
	ExtraRootCAs *x509.CertPool
}

// Node is a tailnet node. Create it with New; it is safe for concurrent use.
type Node struct {
	log   *slog.Logger
	opts  Options
	addr  netip.Addr
	id    int64
	priv  key.NodePrivate
	start time.Time

	sys    *tsd.System
	eng    wgengine.Engine
	ms     *magicsock.Conn
	ns     *netstack.Impl
	dialer *tsdial.Dialer
	self   tailcfg.NodeView
	disco  key.DiscoPublic

	// cfgMu serialises configuration calls into magicsock and the engine
	// (UpsertPeer/RemovePeer/SetNetworkMap must not run concurrently). It is
	// taken before mu, never after.
	cfgMu sync.Mutex

	mu       sync.Mutex
	closed   bool
	closedCh chan struct{}
	peers    map[uuid.UUID]*peer
	byKey    map[key.NodePublic]*peer
	byAddr   map[netip.Addr]*peer
	nextID   tailcfg.NodeID
	changed  chan struct{} // closed and replaced whenever peers change
	// dialRetries counts handshakes abandoned for a fresh port (dialTCP).
	dialRetries atomic.Int64
	listeners   map[uint16]*listener
	derpMap     *tailcfg.DERPMap
	netInfo     *tailcfg.NetInfo
	endpoints   []netip.AddrPort
	published   *NodeInfo // last value handed to callbacks
	callbacks   []func(NodeInfo)

	// notifyMu orders deliveries to callbacks.
	notifyMu sync.Mutex
}

// AgentAddr is an agent's tailnet address: ServicePrefix followed by bytes
// 6..15 of its UUID (docs/protocol.md#agent-address).
func AgentAddr(agentID uuid.UUID) netip.Addr {
	b := ServicePrefix.Addr().As16()
	copy(b[6:], agentID[6:])
	return netip.AddrFrom16(b)
}

func randomAddr() (netip.Addr, error) {
	b := ServicePrefix.Addr().As16()
	if _, err := rand.Read(b[6:]); err != nil {
		return netip.Addr{}, fmt.Errorf("tsnode: random address: %w", err)
	}
	return netip.AddrFrom16(b), nil
}

func randomNodeID() (int64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("tsnode: random node id: %w", err)
	}
	return int64(binary.BigEndian.Uint64(b[:])>>1) | 1, nil
}

// New starts a node. It runs until Close.
func New(opts Options) (_ *Node, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RemoveGrace <= 0 {
		opts.RemoveGrace = 5 * time.Second
	}
	addr := opts.Address
	if !addr.IsValid() {
		if addr, err = randomAddr(); err != nil {
			return nil, err
		}
	} else if !addr.Is6() || !ServicePrefix.Contains(addr) {
		return nil, fmt.Errorf("%w: %s", ErrBadAddress, addr)
	}
	id, err := randomNodeID()
	if err != nil {
		return nil, err
	}
	if err := acquireKnobs(knobs{
		derpOnly: opts.DERPOnly, wsDERP: opts.ForceWebsocketDERP,
		loopbackOnly: opts.LoopbackOnly, plainDERP: opts.PlainHTTPDERP,
	}); err != nil {
		return nil, err
	}
	n := &Node{
		log:       opts.Logger.With("component", "tsnode", "tailnet_ip", addr),
		opts:      opts,
		addr:      addr,
		id:        id,
		priv:      key.NewNode(),
		start:     time.Now(),
		closedCh:  make(chan struct{}),
		peers:     map[uuid.UUID]*peer{},
		byKey:     map[key.NodePublic]*peer{},
		byAddr:    map[netip.Addr]*peer{},
		changed:   make(chan struct{}),
		listeners: map[uint16]*listener{},
	}
	if err := n.startEngine(); err != nil {
		n.teardown()
		releaseKnobs()
		return nil, err
	}
	n.log.Debug("tsnode started", "node_key", n.priv.Public().ShortString(), "udp_port", n.ms.LocalPort())
	return n, nil
}

func (n *Node) startEngine() error {
	logf := n.logf()
	n.sys = tsd.NewSystem()
	n.dialer = &tsdial.Dialer{Logf: logf}
	n.dialer.SetBus(n.sys.Bus.Get())
	eng, err := wgengine.NewUserspaceEngine(logf, wgengine.Config{
		EventBus:      n.sys.Bus.Get(),
		ListenPort:    n.opts.ListenPort,
		Dialer:        n.dialer,
		SetSubsystem:  n.sys.Set,
		ControlKnobs:  n.sys.ControlKnobs(),
		HealthTracker: n.sys.HealthTracker.Get(),
		Metrics:       n.sys.UserMetricsRegistry(),
		ExtraRootCAs:  n.opts.ExtraRootCAs,
	})
	if err != nil {
		return fmt.Errorf("tsnode: engine: %w", err)
	}
	n.eng = eng
	n.sys.Set(eng)
	n.ms = n.sys.MagicSock.Get()
	n.disco = n.ms.DiscoPublicKey()

	ns, err := netstack.Create(logf, n.sys.Tun.Get(), eng, n.ms, n.dialer, n.sys.DNSManager.Get(), n.sys.ProxyMapper())
	if err != nil {
		return fmt.Errorf("tsnode: netstack: %w", err)
	}
	n.ns = ns
	n.sys.Tun.Get().Start()
	n.sys.Set(ns)
	ns.ProcessLocalIPs = true
	ns.ProcessSubnets = false
	ns.GetTCPHandlerForFlow = n.tcpHandlerForFlow
	ns.GetUDPHandlerForFlow = n.udpHandlerForFlow
	if err := ns.Start(nil); err != nil {
		return fmt.Errorf("tsnode: start netstack: %w", err)
	}

	prefix := netip.PrefixFrom(n.addr, n.addr.BitLen())
	self := &tailcfg.Node{
		ID:                tailcfg.NodeID(1),
		StableID:          "self",
		Name:              "wsedge-tsnode.",
		Key:               n.priv.Public(),
		DiscoKey:          n.disco,
		Addresses:         []netip.Prefix{prefix},
		AllowedIPs:        []netip.Prefix{prefix},
		MachineAuthorized: true,
		Hostinfo:          (&tailcfg.Hostinfo{Hostname: "wsedge-tsnode"}).View(),
	}
	n.self = self.View()
	// Installed after n.self is set: the engine may call them at once.
	eng.SetPeerConfigFunc(n.peerAllowedIPs)
	eng.SetPeerByIPPacketFunc(n.peerKeyForIP)
	eng.SetPeerForIPFunc(n.peerForIP)
	eng.SetStatusCallback(n.onEngineStatus)
	n.ms.SetNetInfoCallback(n.onNetInfo)

	if n.opts.LoopbackOnly {
		// Before Reconfig: setting the private key starts endpoint
		// discovery in a goroutine that reads the static endpoints without
		// magicsock's lock (upstream v1.102.5, determineEndpoints), so
		// writing them afterwards is a data race.
		n.ms.SetStaticEndpoints(views.SliceOf([]netip.AddrPort{
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), n.ms.LocalPort()),
		}))
	}
	eng.SetSelfNode(n.self)
	ns.UpdateNetstackIPs(&netmap.NetworkMap{SelfNode: n.self})
	if err := eng.Reconfig(&wgcfg.Config{PrivateKey: n.priv, Addresses: []netip.Prefix{prefix}},
		&router.Config{LocalAddrs: []netip.Prefix{prefix}}, &dns.Config{}); err != nil {
		return fmt.Errorf("tsnode: reconfig: %w", err)
	}
	eng.SetFilter(inboundFilter(prefix, logf))
	// There is no control server; coordination plays its part. Saying the
	// map poll is up lets magicsock move its home DERP region when netcheck
	// finds a better one (the change is then published to peers).
	n.sys.HealthTracker.Get().GotStreamedMapResponse()
	n.cfgMu.Lock()
	defer n.cfgMu.Unlock()
	n.ms.SetNetworkMap(n.self, nil)
	if n.opts.DERPMap != nil {
		n.applyDERPMapLocked(n.opts.DERPMap)
	}
	eng.RequestStatus()
	return nil
}

// logf routes tailscale's printf-style logs to slog at debug level.
func (n *Node) logf() logger.Logf {
	log := n.log
	return func(format string, args ...any) {
		if !log.Enabled(context.Background(), slog.LevelDebug) {
			return
		}
		log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "source", "tailscale")
	}
}

// Address is the node's tailnet address.
func (n *Node) Address() netip.Addr { return n.addr }

// Close stops the node and releases its sockets and goroutines. Open
// connections fail; listeners return net.ErrClosed.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.closedCh)
	lns := make([]*listener, 0, len(n.listeners))
	for _, ln := range n.listeners {
		lns = append(lns, ln)
	}
	n.callbacks = nil
	for _, p := range n.byKey {
		if p.departTimer != nil {
			p.departTimer.Stop()
		}
	}
	n.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	n.teardown()
	releaseKnobs()
	n.log.Debug("tsnode closed")
	return nil
}

func (n *Node) teardown() {
	if n.ns != nil {
		closeNetstack(n.ns, n.logf())
	}
	if n.eng != nil {
		n.eng.Close()
		<-n.eng.Done()
	}
	if n.dialer != nil {
		_ = n.dialer.Close()
	}
	if n.sys != nil {
		n.sys.Bus.Get().Close()
	}
}
