//go:build !linux

package dialer

import (
	"context"
	"errors"
	"net"
	"syscall"
)

// readinessPoller is Linux's (epoll); elsewhere each upgraded session
// reads its client with a goroutine of its own.
type readinessPoller struct{}

func newReadinessPoller() (*readinessPoller, error) {
	return nil, errors.New("readiness polling needs Linux")
}

func (p *readinessPoller) run(ctx context.Context) {}

func (p *readinessPoller) watch(net.Conn, func()) *readinessWaiter { return nil }

// readinessWaiter is never made off Linux.
type readinessWaiter struct{ rc syscall.RawConn }

func (w *readinessWaiter) arm() error              { return errors.ErrUnsupported }
func (w *readinessWaiter) stop() bool              { return false }
func wouldBlock(error) bool                        { return false }
func readNow(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }
