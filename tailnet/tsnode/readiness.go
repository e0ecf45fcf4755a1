package tsnode

import (
	"errors"
	"io"
	"net"
	"reflect"
	"unsafe"

	"github.com/wsedge/wsedge/tailnet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// conn is a connection Dial opened: gonet's net.Conn over a netstack TCP
// endpoint, which is also a tailnet.ReadinessConn. A goroutine blocked in
// gonet's Read holds its stack for as long as the peer is quiet; the
// endpoint's wait queue can call back instead when bytes arrive, and a
// read of the endpoint that finds nothing returns at once.
type conn struct {
	*gonet.TCPConn
	wq *waiter.Queue
	ep tcpip.Endpoint
}

var _ tailnet.ReadinessConn = (*conn)(nil)

// withReadiness wraps c when its endpoint and wait queue can be reached.
// gonet keeps them unexported; they are read by reflection, and a gonet
// that renames them gives plain connections (readers then wait in Read,
// as before).
func withReadiness(c *gonet.TCPConn) net.Conn {
	v := reflect.ValueOf(c).Elem()
	wqf, epf := v.FieldByName("wq"), v.FieldByName("ep")
	if !wqf.IsValid() || !epf.IsValid() || wqf.Type() != reflect.TypeFor[*waiter.Queue]() || epf.Type() != reflect.TypeFor[tcpip.Endpoint]() {
		return c
	}
	wq := *(**waiter.Queue)(unsafe.Pointer(wqf.UnsafeAddr()))
	ep := *(*tcpip.Endpoint)(unsafe.Pointer(epf.UnsafeAddr()))
	if wq == nil || ep == nil {
		return c
	}
	return &conn{TCPConn: c, wq: wq, ep: ep}
}

// readableEvents are the events after which a read returns at once:
// bytes, the peer's FIN, a reset or error, a local close.
const readableEvents = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr

// NotifyReadable implements tailnet.ReadinessConn. The endpoint notifies
// its wait queue from the netstack's processing, with the queue's lock
// held: f must not call back into the connection's queue.
func (c *conn) NotifyReadable(f func()) (stop func()) {
	e := waiter.NewFunctionEntry(readableEvents, func(waiter.EventMask) { f() })
	c.wq.EventRegister(&e)
	return func() { c.wq.EventUnregister(&e) }
}

// ReadNow implements tailnet.ReadinessConn: gonet's read without the wait
// (its Read with nothing to read registers on the queue and blocks).
func (c *conn) ReadNow(p []byte) (int, error) {
	w := tcpip.SliceWriter(p)
	res, err := c.ep.Read(&w, tcpip.ReadOptions{})
	switch err.(type) {
	case nil:
		if res.Count > 0 {
			c.ep.ModerateRecvBuf(res.Count) // as gonet's Read: receive buffer auto-tuning
		}
		return res.Count, nil
	case *tcpip.ErrWouldBlock:
		return 0, tailnet.ErrWouldBlock
	case *tcpip.ErrClosedForReceive:
		return 0, io.EOF
	default:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.New(err.String())}
	}
}
