// Package derp is the dialer's DERP relay: upstream tailscale.com's DERP
// server mounted at /derp (HTTP "Upgrade: DERP" and websockets with the
// "derp" subprotocol from any origin), /derp/latency-check, a mesh with the
// sibling replicas the primary lists at registration, and the sibling health
// check whose result is sent back to the primary as replica_error (see
// docs/protocol.md#derp-and-mesh).
package derp

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	tsderp "tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/derp/derpserver"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
)

// Defaults of the sibling health check (docs/protocol.md#derp-and-mesh).
const (
	DefaultCheckTimeout    = 3 * time.Second
	DefaultCheckAttempts   = 2
	DefaultCheckRetryDelay = time.Second
)

// LatencyCheckPath answers 200 with an empty body; siblings and the
// dashboard probe it.
const LatencyCheckPath = "/derp/latency-check"

// ErrNoMeshKey is returned by SetMeshPeers when siblings are given but the
// server has no mesh key.
var ErrNoMeshKey = errors.New("derp: mesh peers need a mesh key")

// ErrBadRelayAddress wraps errors about unusable sibling relay addresses.
var ErrBadRelayAddress = errors.New("derp: bad relay address")

// Options configures a Server.
type Options struct {
	Logger *slog.Logger
	// MeshKey is the primary's derp_mesh_key. Replicas must agree on it;
	// the upstream key is derived from it (MeshKeyFromCoder). Empty: no mesh.
	MeshKey string
	// MeshTLSConfig is used to reach siblings (mesh connections and
	// latency checks) over https. Coder's proxy sets ServerName to its
	// access URL's hostname and RootCAs to its own certificates, so that
	// siblings are dialled by IP but verified by name.
	MeshTLSConfig *tls.Config

	CheckTimeout    time.Duration // per latency-check attempt (3 s)
	CheckAttempts   int           // attempts per sibling (2)
	CheckRetryDelay time.Duration // between attempts (1 s)
	// After is the clock for the retry delay. Default time.After.
	After func(time.Duration) <-chan time.Time
}

// Server is the DERP relay. It is an http.Handler for /derp, /derp/ and
// /derp/latency-check; other paths get 404.
type Server struct {
	log     *slog.Logger
	opts    Options
	srv     *derpserver.Server
	handler http.Handler
	meshKey key.DERPMesh
	checkHC *http.Client

	mu     sync.Mutex
	closed bool
	mesh   map[string]*meshPeer // by relay address
	// hostnames of the siblings by relay address (SetSiblings); replaced
	// whole, never modified.
	hostnames map[string]string
}

// Sibling is a replica of this proxy as the registration response lists
// it.
type Sibling struct {
	Hostname     string
	RelayAddress string
}

// SetSiblings is SetMeshPeers for the siblings' relay addresses, also
// remembering their hostnames for CheckPeers' report. Siblings without a
// relay address are skipped.
func (s *Server) SetSiblings(siblings []Sibling) error {
	names := make(map[string]string, len(siblings))
	relays := make([]string, 0, len(siblings))
	for _, sib := range siblings {
		if sib.RelayAddress == "" {
			continue
		}
		names[sib.RelayAddress] = sib.Hostname
		relays = append(relays, sib.RelayAddress)
	}
	s.mu.Lock()
	s.hostnames = names
	s.mu.Unlock()
	return s.SetMeshPeers(relays)
}

type meshPeer struct {
	client *derphttp.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// MeshKeyFromCoder derives the upstream DERP mesh key (64 hex digits) from
// coderd's derp_mesh_key: hex(SHA-256(key)), the same on every replica.
func MeshKeyFromCoder(coderKey string) string {
	sum := sha256.Sum256([]byte(coderKey))
	return hex.EncodeToString(sum[:])
}

// New returns a running DERP server with a fresh node key.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	if opts.CheckAttempts <= 0 {
		opts.CheckAttempts = DefaultCheckAttempts
	}
	if opts.CheckRetryDelay <= 0 {
		opts.CheckRetryDelay = DefaultCheckRetryDelay
	}
	if opts.After == nil {
		opts.After = time.After
	}
	log := opts.Logger.With("component", "derp")
	s := &Server{
		log:  log,
		opts: opts,
		srv:  derpserver.New(key.NewNode(), tsLogf(log)),
		mesh: map[string]*meshPeer{},
	}
	if opts.MeshKey != "" {
		if err := s.srv.SetMeshKey(MeshKeyFromCoder(opts.MeshKey)); err != nil {
			_ = s.srv.Close()
			return nil, fmt.Errorf("derp: mesh key: %w", err)
		}
		s.meshKey = s.srv.MeshKey()
	}
	s.handler = derpserver.AddWebSocketSupport(s.srv, derpserver.Handler(s.srv))
	tr := &http.Transport{
		TLSClientConfig:   cloneTLS(opts.MeshTLSConfig),
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	s.checkHC = &http.Client{Transport: tr, Timeout: opts.CheckTimeout}
	return s, nil
}

func cloneTLS(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	return c.Clone()
}

// tsLogf sends upstream's printf logs to slog at debug level.
func tsLogf(log *slog.Logger) func(string, ...any) {
	return func(format string, args ...any) {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "source", "tailscale")
		}
	}
}

// ServeHTTP serves DERP on /derp and /derp/ and the latency check.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case LatencyCheckPath:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
	case "/derp", "/derp/":
		s.handler.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

// SetMeshPeers makes the mesh follow the siblings' relay addresses
// (http(s)://host:port, as in the registration response): a mesh client is
// started for each new address and stopped for each one gone. Unusable
// addresses are reported (the others still apply).
func (s *Server) SetMeshPeers(relayAddresses []string) error {
	want := map[string]*url.URL{}
	var errs []error
	for _, a := range relayAddresses {
		u, err := parseRelay(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[a] = u
	}
	if len(want) > 0 && s.meshKey.IsZero() {
		return ErrNoMeshKey
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	var stop []*meshPeer
	for a, p := range s.mesh {
		if want[a] == nil {
			stop = append(stop, p)
			delete(s.mesh, a)
			s.log.Info("derp: mesh peer removed", "relay_address", a)
		}
	}
	for a, u := range want {
		if s.mesh[a] != nil {
			continue
		}
		p, err := s.startMeshPeer(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("derp: mesh with %s: %w", a, err))
			continue
		}
		s.mesh[a] = p
		s.log.Info("derp: mesh peer added", "relay_address", a)
	}
	s.mu.Unlock()
	for _, p := range stop {
		p.stop()
	}
	return errors.Join(errs...)
}

// MeshPeers returns the relay addresses currently meshed with, sorted.
func (s *Server) MeshPeers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.mesh))
	for a := range s.mesh {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func parseRelay(a string) (*url.URL, error) {
	u, err := url.Parse(a)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadRelayAddress, a, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w %q: want http(s)://host[:port]", ErrBadRelayAddress, a)
	}
	return u, nil
}

// startMeshPeer runs a mesh client to u that registers every client
// connected there as reachable through it (as tailscale's cmd/derper does).
func (s *Server) startMeshPeer(u *url.URL) (*meshPeer, error) {
	target := *u
	target.Path, target.RawQuery, target.Fragment = "/derp", "", ""
	tlsConf := cloneTLS(s.opts.MeshTLSConfig)
	// Upstream verifies the URL's hostname; Coder dials siblings by address
	// but verifies them as the access URL's hostname. Keep the port, put
	// ServerName in the URL and dial the real address.
	redirect := u.Scheme == "https" && tlsConf != nil && tlsConf.ServerName != "" && tlsConf.ServerName != u.Hostname()
	if redirect {
		target.Host = net.JoinHostPort(tlsConf.ServerName, portOf(u))
	}
	log := s.log.With("relay_address", u.String())
	c, err := derphttp.NewClient(s.srv.PrivateKey(), target.String(), tsLogf(log), netmon.NewStatic())
	if err != nil {
		return nil, err
	}
	c.MeshKey = s.meshKey
	c.WatchConnectionChanges = true
	c.TLSConfig = tlsConf
	if redirect {
		addr := net.JoinHostPort(u.Hostname(), portOf(u))
		var d net.Dialer
		c.SetURLDialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &meshPeer{client: c, cancel: cancel, done: make(chan struct{})}
	add := func(m tsderp.PeerPresentMessage) { s.srv.AddPacketForwarder(m.Key, c) }
	remove := func(m tsderp.PeerGoneMessage) { s.srv.RemovePacketForwarder(m.Peer, c) }
	go func() {
		defer close(p.done)
		c.RunWatchConnectionLoop(ctx, s.srv.PublicKey(), tsLogf(log), add, remove, func(err error) {
			log.Debug("derp: mesh connection", "error", err)
		})
	}()
	return p, nil
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

func (p *meshPeer) stop() {
	p.cancel()
	_ = p.client.Close()
	<-p.done
}

// Close stops the mesh and the DERP server (connected clients are dropped).
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	peers := s.mesh
	s.mesh = nil
	s.mu.Unlock()
	for _, p := range peers {
		p.stop()
	}
	s.checkHC.CloseIdleConnections()
	return s.srv.Close()
}
