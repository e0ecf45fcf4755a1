package devagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/wsedge/wsedge/tailnet"
	"golang.org/x/sync/errgroup"
)

// App kinds served by the agent.
const (
	KindHTTP      = "http"      // DemoApp
	KindWebsocket = "websocket" // WebsocketEchoApp
	KindHTTPS     = "https"     // DemoApp over TLS with a self-signed certificate
)

// Reserved agent ports (docs/protocol.md#agent-ports). Apps may not use ports
// below MinAppPort.
const (
	ReconnectingPTYPort = 2
	MinAppPort          = 9
)

// AppSpec is one app the agent serves.
type AppSpec struct {
	Port uint16
	Kind string
}

// Options configures an Agent.
type Options struct {
	AgentID uuid.UUID
	Apps    []AppSpec
	Logger  *slog.Logger
	// Listen returns a listener for a port on the agent's address: loopback
	// TCP in tests, the tailnet node's netstack in the dev setup.
	Listen func(port uint16) (net.Listener, error)
	// PTY configures the reconnecting-PTY server on port 2.
	PTY PTYOptions
	// Now is the clock for certificate validity. Default time.Now.
	Now func() time.Time
}

// Agent serves the demo apps and the reconnecting PTY.
type Agent struct {
	opts Options
	log  *slog.Logger
}

// ErrBadApp reports an app the agent cannot serve.
var ErrBadApp = errors.New("devagent: bad app")

// New returns an agent; nothing runs until Run.
func New(opts Options) *Agent {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PTY.Logger == nil {
		opts.PTY.Logger = opts.Logger
	}
	return &Agent{opts: opts, log: opts.Logger.With("component", "devagent", "agent_id", opts.AgentID)}
}

func (a *Agent) validate() error {
	if a.opts.Listen == nil {
		return errors.New("devagent: Options.Listen is required")
	}
	seen := map[uint16]bool{}
	for _, app := range a.opts.Apps {
		if app.Port < MinAppPort {
			return fmt.Errorf("%w: port %d is reserved (apps need >= %d)", ErrBadApp, app.Port, MinAppPort)
		}
		if seen[app.Port] {
			return fmt.Errorf("%w: port %d listed twice", ErrBadApp, app.Port)
		}
		seen[app.Port] = true
		switch app.Kind {
		case KindHTTP, KindWebsocket, KindHTTPS:
		default:
			return fmt.Errorf("%w: port %d: unknown kind %q", ErrBadApp, app.Port, app.Kind)
		}
	}
	return nil
}

// Run serves every app and the PTY until ctx is cancelled, then shuts them
// down and returns nil; it returns an error if a listener cannot be opened
// or a server fails.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.validate(); err != nil {
		return err
	}
	var tlsConf *tls.Config
	for _, app := range a.opts.Apps {
		if app.Kind == KindHTTPS && tlsConf == nil {
			ip := tailnet.AgentAddr(a.opts.AgentID)
			c, err := SelfSignedTLSConfig(a.opts.Now(), []string{"localhost"},
				[]net.IP{net.IP(ip.AsSlice()), net.IPv4(127, 0, 0, 1), net.IPv6loopback})
			if err != nil {
				return err
			}
			tlsConf = c
		}
	}

	var listeners []net.Listener
	closeAll := func() {
		for _, ln := range listeners {
			_ = ln.Close()
		}
	}
	ptyLn, err := a.opts.Listen(ReconnectingPTYPort)
	if err != nil {
		return fmt.Errorf("devagent: listen on pty port: %w", err)
	}
	listeners = append(listeners, ptyLn)
	servers := make([]*http.Server, 0, len(a.opts.Apps))
	appLns := make([]net.Listener, 0, len(a.opts.Apps))
	for _, app := range a.opts.Apps {
		ln, err := a.opts.Listen(app.Port)
		if err != nil {
			closeAll()
			return fmt.Errorf("devagent: listen on app port %d: %w", app.Port, err)
		}
		listeners = append(listeners, ln)
		var h http.Handler
		switch app.Kind {
		case KindWebsocket:
			h = WebsocketEchoApp(a.log)
		default:
			h = DemoApp(a.log)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 30 * time.Second,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		}
		if app.Kind == KindHTTPS {
			ln = tls.NewListener(ln, tlsConf)
		}
		servers = append(servers, srv)
		appLns = append(appLns, ln)
	}

	ptySrv := NewPTYServer(a.opts.PTY)
	g, gctx := errgroup.WithContext(ctx)
	for _, srv := range servers {
		// Request contexts end with Run, so hijacked websocket handlers,
		// which Shutdown does not wait for, stop too.
		srv.BaseContext = func(net.Listener) context.Context { return gctx }
	}
	g.Go(func() error {
		if err := ptySrv.Serve(ptyLn); err != nil && !errors.Is(err, ErrServerClosed) {
			return err
		}
		return nil
	})
	for i, srv := range servers {
		ln := appLns[i]
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("devagent: serve app: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, srv := range servers {
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close()
			}
		}
		return ptySrv.Close()
	})
	a.log.Info("devagent serving", "apps", len(a.opts.Apps), "pty_port", ReconnectingPTYPort)
	return g.Wait()
}
