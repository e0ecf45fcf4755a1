package tsnode

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestShortReadDeadlineLooksAtPendingBytes: the dialer looks at an idle
// pooled connection that cannot be read without waiting (Dial's, should
// withReadiness not reach gonet's endpoint) with a read whose deadline is
// a millisecond away. Over the tailnet that read must return bytes
// already there, or the peer's close, rather than time out; with nothing
// there it times out (a net.Error whose Timeout is true) and the
// connection still works.
func TestShortReadDeadlineLooksAtPendingBytes(t *testing.T) {
	c, _ := dialServed(t, 9001, func(c net.Conn) {
		var b [2]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		_, _ = c.Write([]byte("hello"))
		_, _ = io.ReadFull(c, b[:]) // then close when asked
	})
	// The dialer waits a millisecond; a read preempted past its deadline
	// does not look, so a probe that must see bytes may take a few tries
	// on a loaded machine.
	probe := func() (int, error) {
		t.Helper()
		if err := c.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		n, err := c.Read(b[:])
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		return n, err
	}
	if n, err := probe(); n != 0 || !isTimeout(err) {
		t.Fatalf("nothing pending: %d bytes, %v; want a timeout", n, err)
	}
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // "hello" arrives
	n, err := probe()
	for try := 1; try < 5 && isTimeout(err); try++ {
		n, err = probe()
	}
	if n != 1 || err != nil {
		t.Fatalf("bytes pending: %d bytes, %v; want one", n, err)
	}
	rest := make([]byte, 4)
	if _, err := io.ReadFull(c, rest); err != nil || string(rest) != "ello" {
		t.Fatalf("after the probe: %q, %v", rest, err)
	}
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the close arrives
	n, err = probe()
	for try := 1; try < 5 && isTimeout(err); try++ {
		n, err = probe()
	}
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("peer closed: %d bytes, %v; want EOF", n, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}
