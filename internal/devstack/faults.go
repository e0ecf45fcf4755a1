package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	devprimary "github.com/wsedge/wsedge/dev/primary"
)

// devFaults holds what a fault test needs to take single services of a
// running Dev away and bring them back: authz and the dialer on their
// fixed addresses (Envoy's static clusters find them again), agents by ID.
type devFaults struct {
	runCtx        context.Context
	authz, dialer *service
	startAgent    func(devprimary.Agent) error
	catalog       *devprimary.Catalog
}

// service is one restartable service of a Dev.
type service struct {
	name  string
	addr  string
	serve func(ctx context.Context, ln net.Listener) error

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// startService runs s on ln until Close or stopService.
func (d *Dev) startService(s *service, ln net.Listener) {
	ctx, cancel := context.WithCancel(d.faults.runCtx)
	done := make(chan struct{})
	s.mu.Lock()
	s.cancel, s.done = cancel, done
	s.mu.Unlock()
	d.run(s.name, func() error {
		defer close(done)
		// A service that fails before serving must not leave the port
		// accepting connections nobody answers (Envoy would wait on them).
		defer ln.Close()
		return s.serve(ctx, ln)
	})
}

// stopService stops s the way Close would (graceful shutdown, dialer
// deregistration) and waits until it has returned.
func (d *Dev) stopService(s *service) error {
	if s == nil {
		return errors.New("stack: service not started by StartDev")
	}
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done = nil, nil
	s.mu.Unlock()
	if cancel == nil {
		return fmt.Errorf("stack: %s is not running", s.name)
	}
	cancel()
	<-done
	return nil
}

// restartService starts a stopped s again on the address it had.
func (d *Dev) restartService(ctx context.Context, s *service) error {
	if s == nil {
		return errors.New("stack: service not started by StartDev")
	}
	s.mu.Lock()
	running := s.cancel != nil
	s.mu.Unlock()
	if running {
		return fmt.Errorf("stack: %s is already running", s.name)
	}
	ln, err := listenAgain(ctx, s.addr)
	if err != nil {
		return fmt.Errorf("stack: restart %s: %w", s.name, err)
	}
	d.startService(s, ln)
	return nil
}

// listenAgain listens on addr, retrying briefly while the port is still
// held by the listener that was just closed.
func listenAgain(ctx context.Context, addr string) (net.Listener, error) {
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return ln, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StopAuthz stops the authz service (ext_authz and ext_proc) and waits
// for it: Envoy then fails closed. Not to be called concurrently with
// Close.
func (d *Dev) StopAuthz() error { return d.stopService(d.faults.authz) }

// StartAuthz starts authz again on the address Envoy knows, after
// StopAuthz. It serves once it has fetched the primary's keys.
func (d *Dev) StartAuthz(ctx context.Context) error {
	return d.restartService(ctx, d.faults.authz)
}

// StopDialer stops the dialer as a rolling restart would: terminals are
// closed with 1001, app websockets get the shutdown grace (2 s) and are
// then cut, the replica deregisters and leaves the tailnet.
func (d *Dev) StopDialer() error { return d.stopService(d.faults.dialer) }

// StartDialer starts a new dialer on the address Envoy knows, after
// StopDialer: a new replica with a new tailnet node.
func (d *Dev) StartDialer(ctx context.Context) error {
	return d.restartService(ctx, d.faults.dialer)
}

// StartAgent starts the catalog's agent id again after StopAgent, with a
// new tailnet node (new keys), as a rebuilt workspace would.
func (d *Dev) StartAgent(id uuid.UUID) error {
	if d.faults.startAgent == nil {
		return errors.New("stack: agents not started by StartDev")
	}
	d.mu.Lock()
	_, running := d.agentStops[id]
	d.mu.Unlock()
	if running {
		return fmt.Errorf("stack: dev agent %s is already running", id)
	}
	for _, w := range d.faults.catalog.Workspaces {
		for _, a := range w.Agents {
			if aid, err := uuid.Parse(a.ID); err == nil && aid == id {
				return d.faults.startAgent(a)
			}
		}
	}
	return fmt.Errorf("stack: no agent %s in the catalog", id)
}
