package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/tokens"
)

// dialEdgeHTTP2 starts the whole path with TLS on the edge and opens an
// HTTP/2 connection (ALPN h2) to it, for the echo app's host.
func dialEdgeHTTP2(ctx context.Context, t *testing.T) (*edge, *tls.Conn) {
	t.Helper()
	certFile, keyFile, roots := testCert(t)
	fp := startEdge(t, WithDev(func(c *devstack.DevConfig) {
		c.AccessURL = &url.URL{Scheme: "https", Host: accessHost}
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	}, logEveryRequest))
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", fp.dev.EdgeAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, &tls.Config{ServerName: echoHost, RootCAs: roots, NextProtos: []string{"h2"}})
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	return fp, conn
}

// TestWebsocketsOverOneHTTP2Connection opens several RFC 8441 websockets
// (extended CONNECT, as Firefox sends them once it speaks HTTP/2 to a
// site) at once over one TLS HTTP/2 connection to real Envoy, through
// authz, the dialer and the tailnet to the agent's echo app, and checks
// each echoes its own bytes. Envoy with allow_connect had only the first
// stream of a connection upgrade (envoy#38645).
func TestWebsocketsOverOneHTTP2Connection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fp, conn := dialEdgeHTTP2(ctx, t)
	session, _ := fp.dev.Primary.SessionToken("alice")
	// x/net's HTTP/2 client: net/http's own ClientConn refuses the
	// :protocol pseudo-header an extended CONNECT needs.
	//lint:ignore SA1019 net/http cannot send RFC 8441 extended CONNECT
	cc, err := (&http2.Transport{}).NewClientConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	// As a page load does: ordinary requests first, so no websocket is the
	// connection's first stream, then websockets opened while more
	// ordinary requests come and go on the same connection.
	var tokenMu sync.Mutex
	var token string // a signed app token authz issued for the echo app
	get := func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+echoHost+"/", nil)
		req.Header.Set("Coder-Session-Token", session)
		res, err := cc.RoundTrip(req)
		if err != nil {
			return err
		}
		if v := setCookieValue(res.Header, tokens.SignedAppTokenCookie); v != "" {
			tokenMu.Lock()
			token = v
			tokenMu.Unlock()
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET: status %d", res.StatusCode)
		}
		return nil
	}
	for range 3 {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	const sockets = 6
	var wg sync.WaitGroup
	errs := make(chan error, 2*sockets)
	for i := range sockets {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := h2EchoSocket(ctx, cc, http.Header{"Coder-Session-Token": {session}}, i); err != nil {
				errs <- fmt.Errorf("websocket %d: %w", i, err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := get(); err != nil {
				errs <- fmt.Errorf("request %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// And once they are closed, the connection still upgrades.
	if _, err := h2EchoSocket(ctx, cc, http.Header{"Coder-Session-Token": {session}}, sockets); err != nil {
		t.Errorf("websocket after the others closed: %v", err)
	}
	// With the token cookie a page holds, Envoy presents the extended
	// CONNECT to its route table as a GET asking for websocket: the
	// websocket warm twin takes it.
	if token == "" {
		t.Fatal("authz issued no signed app token cookie")
	}
	id, err := h2EchoSocket(ctx, cc, http.Header{"Cookie": {tokens.SignedAppTokenCookie + "=" + token}}, sockets+1)
	if err != nil {
		t.Fatalf("websocket with the token cookie: %v", err)
	}
	if got := accessLogRoute(t, fp, id); got != "subdomain-app-warm-websocket" {
		t.Errorf("the extended CONNECT with a token cookie took route %q, want subdomain-app-warm-websocket", got)
	}
}

// h2EchoSocket opens one websocket as a browser does over HTTP/2 (no
// Sec-WebSocket-Key: RFC 8441 has none) with the given headers, holds it
// open while the others are opened, checks a few messages come back
// unchanged, and returns the X-Coder-Request-Id of its answer.
//
//lint:ignore SA1019 see TestWebsocketsOverOneHTTP2Connection
func h2EchoSocket(ctx context.Context, cc *http2.ClientConn, hdr http.Header, n int) (requestID string, _ error) {
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "https://"+echoHost+"/", pr)
	if err != nil {
		return "", err
	}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Origin", "https://"+echoHost)
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	res, err := cc.RoundTrip(req)
	if err != nil {
		return "", fmt.Errorf("extended CONNECT: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return "", fmt.Errorf("extended CONNECT: status %d: %q", res.StatusCode, b)
	}
	requestID = res.Header.Get("X-Coder-Request-Id")
	for i := range 3 {
		msg := fmt.Sprintf("socket %d message %d %x", n, i, make([]byte, 8*n))
		if err := writeFrame(pw, []byte(msg)); err != nil {
			return "", fmt.Errorf("write: %w", err)
		}
		got, err := readFrame(res.Body)
		if err != nil {
			return "", fmt.Errorf("read: %w", err)
		}
		if string(got) != msg {
			return "", fmt.Errorf("echo %q, want %q", got, msg)
		}
		time.Sleep(50 * time.Millisecond) // keep every socket open together
	}
	return requestID, nil
}

// writeFrame writes one masked, final text frame (RFC 6455 §5.2).
func writeFrame(w io.Writer, payload []byte) error {
	hdr := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		return fmt.Errorf("frame too long")
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	body := make([]byte, len(payload))
	for i, b := range payload {
		body[i] = b ^ mask[i%4]
	}
	_, err := w.Write(append(hdr, body...))
	return err
}

// readFrame reads one unmasked server frame and returns its payload.
func readFrame(r io.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 || n > 1<<20 {
		return nil, fmt.Errorf("unexpected frame header %x", h)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}
