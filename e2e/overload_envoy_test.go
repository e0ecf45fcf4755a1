package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/envoy"
)

// TestEnvoyOverloadManagerAnswers503WithRetryAfter: with its heap over
// --max-heap-bytes, real Envoy refuses new requests with a 503 that
// carries Retry-After (the overload manager's stop_accepting_requests and
// the edge's local-reply mapper), instead of taking on more work.
func TestEnvoyOverloadManagerAnswers503WithRetryAfter(t *testing.T) {
	st := startEdge(t, withSmokeFakes(&smokeAuthz{}), WithEnvoy(func(c *envoy.Config) { c.Limits.MaxHeapBytes = 1 << 20 }))
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := st.client.Get("http://" + accessHost + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusServiceUnavailable {
				if got := res.Header.Get("Retry-After"); got != "1" {
					t.Errorf("overloaded 503 has Retry-After %q, want 1 (body %q)", got, body)
				}
				if !strings.Contains(string(body), "overload") {
					t.Errorf("503 body %q is not the overload manager's", body)
				}
				return
			}
			last = res.Status + " " + string(body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("Envoy with a 1 MiB heap limit still serves: %s", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEnvoyDownstreamConnectionLimit: beyond --max-downstream-connections
// Envoy closes new client connections as it accepts them, and serves
// again once connections go away.
func TestEnvoyDownstreamConnectionLimit(t *testing.T) {
	st := startEdge(t, withSmokeFakes(&smokeAuthz{}), WithEnvoy(func(c *envoy.Config) { c.Limits.MaxDownstreamConnections = 2 }))
	get := func(c net.Conn) (int, error) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+accessHost+"\r\n\r\n"); err != nil {
			return 0, err
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", st.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if code, err := get(c); err != nil || code != http.StatusOK {
			t.Fatalf("connection within the limit: %d, %v", code, err)
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", st.addr)
	if err == nil {
		code, err := get(c)
		c.Close()
		if err == nil {
			t.Fatalf("a third connection was served (%d) with a limit of 2", code)
		}
	}
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", st.addr)
		if err == nil {
			code, err := get(c)
			c.Close()
			if err == nil && code == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("not served again after the held connections closed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
