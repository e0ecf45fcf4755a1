package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/envoyrun"
	"github.com/wsedge/wsedge/tokens"
)

// envoyMemSessions is how many idle websockets BenchmarkEnvoyWebsocketMemory
// holds open through each Envoy.
const envoyMemSessions = 500

// BenchmarkEnvoyWebsocketMemory measures what Envoy alone keeps for an
// open, idle browser websocket: the heap Envoy's allocator reports in use
// (admin /memory "allocated", which no other process and no collector's
// pacing moves) and its RSS, per session, with envoyMemSessions open,
// through wsedge's generated edge (the websocket warm twin: no ext_authz,
// no ext_proc) and through the minimal Envoy of
// BenchmarkWarmPathVsReference, the baseline, in the same run. The
// upstream is a loopback server that switches protocols as the dialer
// would and echoes. It shows how much of issue 16's 64 KiB per session
// Envoy takes by itself before authz and the dialer hold anything.
func BenchmarkEnvoyWebsocketMemory(b *testing.B) {
	bin, err := envoyrun.FindBinary()
	if err != nil {
		b.Skip(err)
	}
	app := startUpgradeUpstream(b)
	jwks := startCostJWKS(b)
	port := strconv.Itoa(int(app.Port()))
	baseline, _ := envoyWebsocketMemory(b, bin, fmt.Appendf(nil, minimalBootstrap, port), "direct")

	bs, err := envoy.Bootstrap(costEdgeConfig(b, app, jwks))
	if err != nil {
		b.Fatal(err)
	}
	edge, held := envoyWebsocketMemory(b, bin, bootstrapYAML(b, bs), envoy.ListenerName)
	// The figures are measured once, above; ns/op is an echo on one of
	// the held sessions through the edge.
	msg, echo := []byte("ping"), make([]byte, 4)
	i := 0
	for b.Loop() {
		c := held[i%len(held)]
		i++
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, echo); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(edge.alloc, "envoy-alloc-B/ws")
	b.ReportMetric(baseline.alloc, "baseline-envoy-alloc-B/ws")
	b.ReportMetric(edge.rss, "envoy-ws-B/session")
	b.ReportMetric(baseline.rss, "baseline-envoy-ws-B/session")
}

type envoyMem struct{ alloc, rss float64 }

// envoyWebsocketMemory starts bootstrap's Envoy, opens and closes a few
// websockets through listener (pools, first-use allocations), then holds
// envoyMemSessions open, each having echoed a few bytes, and measures
// Envoy's growth per session. The sessions and Envoy stay until the
// benchmark ends.
func envoyWebsocketMemory(b *testing.B, bin string, bootstrap []byte, listener string) (envoyMem, []net.Conn) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	b.Cleanup(cancel)
	proc, err := envoyrun.Start(ctx, envoyrun.Options{
		Binary: bin, Bootstrap: bootstrap, Dir: filepath.Join(b.TempDir(), "envoy"), LogLevel: "error",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(proc.Stop)
	addr, err := proc.ListenerAddr(ctx, listener)
	if err != nil {
		b.Fatal(err)
	}
	open := func(n int) []net.Conn {
		conns := make([]net.Conn, 0, n)
		for range n {
			c, err := openEchoWebsocket(addr)
			if err != nil {
				for _, c := range conns {
					_ = c.Close()
				}
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		return conns
	}
	for _, c := range open(8) {
		_ = c.Close()
	}
	time.Sleep(300 * time.Millisecond)
	measure := func() (alloc, rssB float64) {
		body, status, err := proc.AdminGet(ctx, "/memory")
		if err != nil || status != 200 {
			b.Fatalf("admin /memory: %d %v", status, err)
		}
		var m struct {
			Allocated string `json:"allocated"`
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			b.Fatalf("admin /memory %q: %v", body, err)
		}
		a, err := strconv.ParseFloat(m.Allocated, 64)
		if err != nil {
			b.Fatal(err)
		}
		r, err := rss(proc.Pid())
		if err != nil {
			b.Fatal(err)
		}
		return a, r
	}
	a0, r0 := measure()
	conns := open(envoyMemSessions)
	b.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	time.Sleep(500 * time.Millisecond)
	a1, r1 := measure()
	return envoyMem{alloc: (a1 - a0) / envoyMemSessions, rss: (r1 - r0) / envoyMemSessions}, conns
}

// openEchoWebsocket opens a websocket as a browser page of the demo app
// would (its Origin, a signed app token cookie among others, no
// Sec-Fetch-*), checks the 101 and that bytes come back, and returns the
// connection held open.
func openEchoWebsocket(addr netip.AddrPort) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: " + codeHost + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Origin: http://" + codeHost + "\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36\r\n" +
		"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n" +
		"Cookie: theme=dark; " + tokens.SignedAppTokenCookie + "=eyJhbGciOiJIUzUxMiIsImtpZCI6IjEifQ.e30.c2ln\r\n\r\n"
	br := bufio.NewReader(c)
	fail := func(err error) (net.Conn, error) {
		_ = c.Close()
		return nil, err
	}
	if _, err := io.WriteString(c, req); err != nil {
		return fail(err)
	}
	status, err := br.ReadString('\n')
	if err != nil {
		return fail(err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		return fail(fmt.Errorf("websocket handshake answered %q", strings.TrimSpace(status)))
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return fail(err)
		}
		if l == "\r\n" {
			break
		}
	}
	if _, err := io.WriteString(c, "hello"); err != nil {
		return fail(err)
	}
	echo := make([]byte, 5)
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "hello" {
		return fail(fmt.Errorf("echo %q: %v", echo, err))
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// startUpgradeUpstream switches every request to the raw byte echo a
// websocket's frames would cross, as the dialer's 101 does.
func startUpgradeUpstream(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
				_, _ = io.Copy(c, br)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
