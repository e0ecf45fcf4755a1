package tsnode_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/internal/testutil/tailnettest"
	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// The benchmarks measure the same two things three ways in one run: bulk
// download throughput (GET /bytes from the dev agent's demo app over one
// keep-alive connection, MB/s) and round-trip latency (a 64-byte websocket
// echo, ns/op), through tsnode to a dev agent on tsnode over DERP only and
// over direct UDP, and over plain loopback TCP to the same apps.

const bulkChunk = 4 << 20

// dialFunc reaches an agent port.
type dialFunc func(ctx context.Context, port uint16) (net.Conn, error)

func BenchmarkTailnetDERP(b *testing.B) {
	benchTailnet(b, tsnode.Options{DERPOnly: true})
}

func BenchmarkTailnetDirectUDP(b *testing.B) {
	benchTailnet(b, tsnode.Options{})
}

func BenchmarkLoopbackTCP(b *testing.B) {
	var mu sync.Mutex
	addrs := map[uint16]string{}
	ctx, cancel := context.WithCancel(context.Background())
	agent := devagent.New(devagent.Options{
		Apps:   tailnettest.AgentApps,
		Logger: tailnettest.Logger(),
		PTY:    devagent.PTYOptions{Shell: "/bin/sh"},
		Listen: func(port uint16) (net.Listener, error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				mu.Lock()
				addrs[port] = ln.Addr().String()
				mu.Unlock()
			}
			return ln, err
		},
	})
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	var d net.Dialer
	dial := func(ctx context.Context, port uint16) (net.Conn, error) {
		for {
			mu.Lock()
			a := addrs[port]
			mu.Unlock()
			if a != "" {
				return d.DialContext(ctx, "tcp", a)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	runBenchmarks(b, dial)
}

func benchTailnet(b *testing.B, opts tsnode.Options) {
	d := tailnettest.NewDERP(b, nil)
	opts.ExtraRootCAs = d.Roots
	opts.LoopbackOnly = true
	p := tailnettest.NewPrimary(b, d.Map())
	agent := p.StartAgent(b, [16]byte{}, opts)
	proxy := p.StartProxy(b, opts)
	dial := func(ctx context.Context, port uint16) (net.Conn, error) {
		return proxy.Dial(ctx, agent.ID, port)
	}
	// Warm up (handshake) and, for direct mode, wait for the direct path.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := dial(ctx, 8080)
		cancel()
		if err == nil {
			c.Close()
		}
		st, _ := proxy.Node.PeerStatus(agent.ID)
		if err == nil && (opts.DERPOnly || st.Direct.IsValid()) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("tailnet not ready: err %v, status %+v", err, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	runBenchmarks(b, dial)
	if st, _ := proxy.Node.PeerStatus(agent.ID); opts.DERPOnly == st.Direct.IsValid() {
		b.Fatalf("path changed during the benchmark: %+v", st)
	}
}

func runBenchmarks(b *testing.B, dial dialFunc) {
	b.Run("BulkDownload", func(b *testing.B) { benchBulk(b, dial) })
	b.Run("WebsocketRoundTrip", func(b *testing.B) { benchRoundTrip(b, dial) })
}

func benchBulk(b *testing.B, dial dialFunc) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx, 8080) },
		MaxIdleConnsPerHost: 1,
	}}
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("http://agent/bytes?n=%d", bulkChunk)
	get := func() {
		res, err := hc.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || n != bulkChunk {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
	get() // connection established outside the timing
	b.SetBytes(bulkChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		get()
	}
}

func benchRoundTrip(b *testing.B, dial dialFunc) {
	ctx := context.Background()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx, 8081) },
	}}
	ws, _, err := websocket.Dial(ctx, "ws://agent/", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	defer ws.CloseNow()
	msg := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ws.Write(ctx, websocket.MessageBinary, msg); err != nil {
			b.Fatal(err)
		}
		if _, got, err := ws.Read(ctx); err != nil || len(got) != len(msg) {
			b.Fatalf("echo: %d bytes, %v", len(got), err)
		}
	}
}
