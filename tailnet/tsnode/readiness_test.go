package tsnode

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tailnet"
)

// TestConnReadiness: a connection Dial opens says when it has something
// to read, over the real tailnet: nothing to read answers ErrWouldBlock
// at once; the agent's bytes and then its close each call the watcher,
// after which ReadNow returns the bytes and then io.EOF; a stopped
// watcher is not called again; writing still works throughout.
func TestConnReadiness(t *testing.T) {
	nc, ctx := dialServed(t, 9002, func(c net.Conn) {
		var b [2]byte
		for _, answer := range []string{"hello", "again"} {
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
			_, _ = c.Write([]byte(answer))
		}
		_, _ = io.ReadFull(c, b[:]) // then close when asked
	})
	c, ok := nc.(tailnet.ReadinessConn)
	if !ok {
		t.Fatalf("Dial returned %T, not a tailnet.ReadinessConn", nc)
	}
	buf := make([]byte, 16)
	if n, err := c.ReadNow(buf); n != 0 || !errors.Is(err, tailnet.ErrWouldBlock) {
		t.Fatalf("quiet connection: %d bytes, %v; want ErrWouldBlock", n, err)
	}
	calls := make(chan struct{}, 64)
	stop := c.NotifyReadable(func() {
		select {
		case calls <- struct{}{}:
		default:
		}
	})
	// waitRead waits for a call, then reads everything there is.
	waitRead := func(what string) (string, error) {
		t.Helper()
		select {
		case <-calls:
		case <-ctx.Done():
			t.Fatalf("%s: the watcher was not called", what)
		}
		var got []byte
		for {
			n, err := c.ReadNow(buf)
			got = append(got, buf[:n]...)
			if errors.Is(err, tailnet.ErrWouldBlock) {
				if len(got) > 0 {
					return string(got), nil
				}
				select { // called before the bytes were readable: wait again
				case <-calls:
				case <-ctx.Done():
					t.Fatalf("%s: nothing to read", what)
				}
				continue
			}
			if err != nil || n == 0 {
				return string(got), err
			}
		}
	}
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	if got, err := waitRead("bytes"); got != "hello" || err != nil {
		t.Fatalf("after the agent wrote: %q, %v", got, err)
	}
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	if got, err := waitRead("more bytes"); got != "again" || err != nil {
		t.Fatalf("after the agent wrote again: %q, %v", got, err)
	}
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	if _, err := waitRead("close"); !errors.Is(err, io.EOF) {
		t.Fatalf("after the agent closed: %v, want io.EOF", err)
	}
	stop()
	for len(calls) > 0 {
		<-calls
	}
	_ = c.Close() // notifies the queue: a stopped watcher must not hear it
	time.Sleep(100 * time.Millisecond)
	if len(calls) != 0 {
		t.Fatal("a stopped watcher was called")
	}
}
