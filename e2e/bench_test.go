package e2e

// Whole-path benchmarks: browser → real Envoy → authz (+ext_proc) → dialer
// → real WireGuard over DERP → dev agent, each figure next to a baseline
// measured in the same run and interleaved with it, so that the noise of
// a shared machine hits both: Envoy straight to a loopback copy of the
// same app (a second, minimal Envoy), and for websockets the same client
// straight to a loopback copy of the echo app.
//
// Metric names follow internal/benchreport's convention: a figure `m` and
// its baseline `baseline-m` in the same benchmark.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	devagent "github.com/wsedge/wsedge/dev/agent"
)

// appBytes is the response size of the whole-path HTTP figures.
const appBytes = 1024

// appResponse is what the app answers to /bytes?n=appBytes: the load
// generator runs in the process the agent does, so it checks each
// response against this, built once, rather than one built per request.
var appResponse = devagent.PatternBytes(appBytes)

// benchPath is the whole path as benchmarks and soaks run it (more
// options last): the dialer's dial timeout and stats upload as deployed,
// quiet logs, authz's and the dialer's metrics, and warm token cookies for
// the demo's HTTP and websocket apps (codeCookie, echoCookie) obtained
// once with alice's session token.
func benchPath(more ...edgeOption) []edgeOption {
	return append([]edgeOption{WithDev(asDeployed), WithQuietLogs(), WithMetrics(), WithWarmCookies()}, more...)
}

// withDirectApp is the baseline "Envoy straight to the app": a minimal
// Envoy in front of a loopback copy of the demo app.
func withDirectApp() edgeOption {
	return func(s *edgeSetup) {
		WithMinimalEnvoy()(s)
		WithUpstream(devagent.DemoApp(slog.New(slog.DiscardHandler)))(s)
	}
}

// get1KiB fetches /bytes?n=1024 of the code app and checks every byte.
func get1KiB(c *http.Client, host, cookie string) (time.Duration, error) {
	return get1KiBFrom(c, host, cookie, "")
}

// get1KiBFrom is get1KiB sent as a page's fetch to its own origin sends it
// when origin is set: that Origin, and the fetch metadata Chromium adds
// (Sec-Fetch-Site: same-origin, Sec-Fetch-Mode: cors, Sec-Fetch-Dest:
// empty).
func get1KiBFrom(c *http.Client, host, cookie, origin string) (time.Duration, error) {
	return fetch1KiB(c, host, cookie, origin, nil)
}

// fetch1KiB is get1KiBFrom, or with upload a POST of it to the same URL
// (the app answers it alike, without reading it).
func fetch1KiB(c *http.Client, host, cookie, origin string, upload []byte) (time.Duration, error) {
	method, body := http.MethodGet, io.Reader(nil)
	if upload != nil {
		method, body = http.MethodPost, bytes.NewReader(upload)
	}
	req, err := http.NewRequest(method, "http://"+host+"/bytes?n="+strconv.Itoa(appBytes), body)
	if err != nil {
		return 0, err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Sec-Fetch-Mode", "cors")
		req.Header.Set("Sec-Fetch-Dest", "empty")
	}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	got, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, req.URL, err)
	}
	if res.StatusCode != http.StatusOK || !bytes.Equal(got, appResponse) {
		return 0, fmt.Errorf("%s %s: status %d, %d bytes (want 200 and the 1 KiB pattern): %.200q", method, req.URL, res.StatusCode, len(got), got)
	}
	return took, nil
}

// quantile is the q-quantile (0..1) of ds, sorted in place.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(float64(len(ds))*q))]
}

func µs(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// reportLatency reports p50, p99 and requests/s of one side; prefix is ""
// for the figure and "baseline-" for its baseline. busy is the wall time
// the side's requests took (their sum when sequential).
func reportLatency(b *testing.B, prefix string, lat []time.Duration, busy time.Duration) {
	b.ReportMetric(float64(len(lat))/busy.Seconds(), prefix+"req/s")
	b.ReportMetric(µs(quantile(lat, 0.50)), prefix+"p50-µs")
	b.ReportMetric(µs(quantile(lat, 0.99)), prefix+"p99-µs")
}

// BenchmarkWholePath1KiB is one client sending one request at a time: a
// 1 KiB app response along the whole path with a warm token cookie (no
// call to the primary), interleaved request by request with the same
// response from Envoy straight to a loopback app. Reported per side:
// p50, p99 and requests/s (1 / mean latency).
func BenchmarkWholePath1KiB(b *testing.B) {
	bp := startEdge(b, benchPath()...)
	whole := bp.httpClient(1)
	direct := startEdge(b, withDirectApp())
	directClient := direct.httpClient(1)
	for range 20 { // connections, token caches, tunnel
		if _, err := get1KiB(whole, codeHost, bp.codeCookie); err != nil {
			b.Fatal(err)
		}
		if _, err := get1KiB(directClient, codeHost, ""); err != nil {
			b.Fatal(err)
		}
	}
	var wl, dl []time.Duration
	var wsum, dsum time.Duration
	i := 0
	for b.Loop() {
		i++
		order := []bool{true, false}
		if i%2 == 0 {
			order = []bool{false, true}
		}
		for _, isWhole := range order {
			if isWhole {
				d, err := get1KiB(whole, codeHost, bp.codeCookie)
				if err != nil {
					b.Fatal(err)
				}
				wl, wsum = append(wl, d), wsum+d
			} else {
				d, err := get1KiB(directClient, codeHost, "")
				if err != nil {
					b.Fatal(err)
				}
				dl, dsum = append(dl, d), dsum+d
			}
		}
	}
	reportLatency(b, "", wl, wsum)
	reportLatency(b, "baseline-", dl, dsum)
}

// wholePathConcurrency is the number of concurrent clients of the
// throughput figure.
const wholePathConcurrency = 8

// BenchmarkWholePath1KiBConcurrent is wholePathConcurrency clients at
// once: each iteration is a burst of 8 requests per client along the
// whole path and a burst of the same size straight through Envoy to the
// loopback app, in alternating order. Reported per side: requests/s
// (requests / wall time of its bursts) and the p50 and p99 latency under
// that load.
func BenchmarkWholePath1KiBConcurrent(b *testing.B) {
	bp := startEdge(b, benchPath()...)
	whole := bp.httpClient(wholePathConcurrency)
	direct := startEdge(b, withDirectApp())
	directClient := direct.httpClient(wholePathConcurrency)
	burst := func(c *http.Client, cookie string) ([]time.Duration, time.Duration) {
		var mu sync.Mutex
		var lat []time.Duration
		var g errgroup.Group
		start := time.Now()
		for range wholePathConcurrency {
			g.Go(func() error {
				for range 8 {
					d, err := get1KiB(c, codeHost, cookie)
					if err != nil {
						return err
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		return lat, time.Since(start)
	}
	burst(whole, bp.codeCookie) // warm both pools
	burst(directClient, "")
	var wl, dl []time.Duration
	var wbusy, dbusy time.Duration
	i := 0
	for b.Loop() {
		i++
		for k := range 2 {
			if (i+k)%2 == 0 {
				l, d := burst(whole, bp.codeCookie)
				wl, wbusy = append(wl, l...), wbusy+d
			} else {
				l, d := burst(directClient, "")
				dl, dbusy = append(dl, l...), dbusy+d
			}
		}
	}
	reportLatency(b, "", wl, wbusy)
	reportLatency(b, "baseline-", dl, dbusy)
}

// idleWebsockets is how many websockets the memory figure holds open.
// Not above 1,024: the reference's minimal Envoy keeps Envoy's default
// circuit breakers (1,024 connections to a cluster, and each websocket is
// one), so its 1,025th waits for a connection until the route's timeout
// (504); wsedge's edge allows --dialer-max-requests (8,192) and held 4,000
// when tried.
const idleWebsockets = 1000

// heapAfterGC is the live heap of this process after two collections.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// wsSet is a set of open websocket sessions to one echo app.
type wsSet struct {
	conns []*websocket.Conn
}

// closeAll closes every session with a close handshake, 64 at a time
// (each waits for the peer's close frame).
func (s *wsSet) closeAll() {
	var g errgroup.Group
	g.SetLimit(64)
	for _, c := range s.conns {
		g.Go(func() error {
			_ = c.Close(websocket.StatusNormalClosure, "")
			return nil
		})
	}
	_ = g.Wait()
}

// openWebsockets opens n websockets to wsURL (with cookie, through dial)
// 32 at a time, and checks that each echoes a message.
func openWebsockets(ctx context.Context, n int, wsURL, cookie string, dial func(context.Context, string, string) (net.Conn, error)) (*wsSet, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: dial}}
	h := http.Header{}
	if cookie != "" {
		h.Set("Cookie", cookie)
	}
	return openWebsocketsWith(ctx, n, wsURL, hc, h)
}

// openWebsocketsWith is openWebsockets with a given client (a browser
// with a cookie jar, say) and request headers.
func openWebsocketsWith(ctx context.Context, n int, wsURL string, hc *http.Client, h http.Header) (*wsSet, error) {
	set := &wsSet{conns: make([]*websocket.Conn, n)}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error {
			c, res, err := websocket.Dial(gctx, wsURL, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: h})
			if err != nil {
				status, detail := 0, ""
				if res != nil {
					status = res.StatusCode
					b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
					detail = fmt.Sprintf(" (server %q, body %q)", res.Header.Get("Server"), pageMessage(b))
				}
				return fmt.Errorf("websocket %d: status %d: %w%s", i, status, err, detail)
			}
			set.conns[i] = c
			return echoOnce(gctx, c, fmt.Sprintf("hello %d", i))
		})
	}
	err := g.Wait()
	if err != nil {
		for _, c := range set.conns {
			if c != nil {
				c.CloseNow()
			}
		}
		return nil, err
	}
	return set, nil
}

// pageMessage is the message paragraph of an HTML error page (Coder's
// and wsedge's pages put it in the first <p>), else the body.
func pageMessage(b []byte) string {
	s := string(b)
	if _, after, ok := strings.Cut(s, "<p>"); ok {
		if msg, _, ok := strings.Cut(after, "</p>"); ok {
			return msg
		}
	}
	return s
}

// echoOnce sends msg and expects it back.
func echoOnce(ctx context.Context, c *websocket.Conn, msg string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	typ, got, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("websocket read: %w", err)
	}
	if typ != websocket.MessageText || string(got) != msg {
		return fmt.Errorf("websocket echo: got %v %q, want %q", typ, got, msg)
	}
	return nil
}

// envoyAllocated is Envoy's own heap (tcmalloc's allocated bytes from the
// admin /memory endpoint, whose body get returns).
func envoyAllocated(tb testing.TB, get func(path string) (string, error)) float64 {
	tb.Helper()
	body, err := get("/memory")
	if err != nil {
		tb.Fatalf("envoy /memory: %v", err)
	}
	// {"allocated": "1234", ...}
	_, rest, ok := strings.Cut(body, `"allocated":`)
	if !ok {
		tb.Fatalf("envoy /memory: no allocated field: %s", body)
	}
	rest = strings.TrimLeft(rest, ` "`)
	end := strings.IndexAny(rest, `",}`)
	v, err := strconv.ParseFloat(strings.TrimSpace(rest[:end]), 64)
	if err != nil {
		tb.Fatalf("envoy /memory: %v in %s", err, body)
	}
	return v
}

// devEnvoyAdmin reads the whole-path Envoy's admin endpoint.
func (bp *edge) envoyAdmin(path string) (string, error) {
	body, status, err := bp.dev.Envoy.AdminGet(context.Background(), path)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d", status)
	}
	return body, err
}

// BenchmarkWholePathIdleWebsocket opens 1,000 websockets to the echo app
// along the whole path with a warm cookie, checks that each echoes a
// message, and reports what an idle session costs, next to 1,000
// websockets opened by the same client through the minimal Envoy
// straight to a loopback copy of the echo app, measured first in the same
// run. Everything but the two Envoys runs in this process, so the Go heap
// delta (live heap after GC, before and after opening) of the whole path
// includes authz, the dialer, both ends of the tailnet (the dialer's node
// and the dev agent's node), the echo app and the client, while the
// baseline's includes only the client and the app: `proxy-B/session` is
// the difference, the share of the dialer, both tailnet nodes and authz,
// reported against the baseline's per-session cost. Each Envoy's own heap
// per session comes from its admin /memory (`envoy-B/session`, the edge
// with ext_authz, ext_proc and access log vs the minimal one). The loop
// then measures one echo on an idle session of each set, interleaved.
func BenchmarkWholePathIdleWebsocket(b *testing.B) {
	bp := startEdge(b, benchPath()...)
	direct := startEdge(b, withDirectApp())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	directDial := direct.dial
	directURL, wholeURL := "ws://"+codeHost+"/ws", "ws://"+echoHost+"/"
	directAdmin := func(path string) (string, error) { return direct.envoy.AdminGet(b, path), nil }
	// A few sessions each way first, so that one-time costs (connection
	// pools, the tunnel, token caches) are not counted per session.
	for _, warm := range []func() (*wsSet, error){
		func() (*wsSet, error) { return openWebsockets(ctx, 4, directURL, "", directDial) },
		func() (*wsSet, error) { return openWebsockets(ctx, 4, wholeURL, bp.echoCookie, bp.dial) },
	} {
		s, err := warm()
		if err != nil {
			b.Fatal(err)
		}
		s.closeAll()
	}
	time.Sleep(500 * time.Millisecond)

	h0, de0 := heapAfterGC(), envoyAllocated(b, directAdmin)
	directSet, err := openWebsockets(ctx, idleWebsockets, directURL, "", directDial)
	if err != nil {
		b.Fatal(err)
	}
	defer directSet.closeAll()
	time.Sleep(500 * time.Millisecond)
	h1, de1 := heapAfterGC(), envoyAllocated(b, directAdmin)
	we0 := envoyAllocated(b, bp.envoyAdmin)
	whole, err := openWebsockets(ctx, idleWebsockets, wholeURL, bp.echoCookie, bp.dial)
	if err != nil {
		b.Fatal(err)
	}
	defer whole.closeAll()
	time.Sleep(500 * time.Millisecond) // let the agent side settle to idle
	h2, we1 := heapAfterGC(), envoyAllocated(b, bp.envoyAdmin)

	perDirect := (float64(h1) - float64(h0)) / idleWebsockets
	perWhole := (float64(h2) - float64(h1)) / idleWebsockets
	b.Logf("Go heap: %d → %d (+1,000 direct) → %d (+1,000 whole path); edge Envoy allocated %.0f → %.0f; minimal Envoy %.0f → %.0f", h0, h1, h2, we0, we1, de0, de1)

	var wl, dl []time.Duration
	i := 0
	for b.Loop() {
		for k := range 2 {
			set, lat := whole, &wl
			if (i+k)%2 == 1 {
				set, lat = directSet, &dl
			}
			start := time.Now()
			if err := echoOnce(ctx, set.conns[i%idleWebsockets], "ping "+strconv.Itoa(i)); err != nil {
				b.Fatal(err)
			}
			*lat = append(*lat, time.Since(start))
		}
		i++
	}
	b.ReportMetric(perWhole, "B/session")
	b.ReportMetric(perDirect, "baseline-B/session")
	b.ReportMetric(perWhole-perDirect, "proxy-B/session")
	b.ReportMetric(perDirect, "baseline-proxy-B/session")
	b.ReportMetric((we1-we0)/idleWebsockets, "envoy-B/session")
	b.ReportMetric((de1-de0)/idleWebsockets, "baseline-envoy-B/session")
	b.ReportMetric(µs(quantile(wl, 0.5)), "echo-p50-µs")
	b.ReportMetric(µs(quantile(dl, 0.5)), "baseline-echo-p50-µs")
	b.ReportMetric(µs(quantile(wl, 0.99)), "echo-p99-µs")
	b.ReportMetric(µs(quantile(dl, 0.99)), "baseline-echo-p99-µs")
}
