//go:build linux

package e2e

// What Envoy itself spends on a warm request, counted rather than timed:
// valgrind's callgrind counts the user-space instructions Envoy executes,
// the same count for the same binary, bootstrap and requests whatever
// else the machine is doing. The CPU figures of BenchmarkWarmPathVsReference
// move ±5 % from run to run on a shared two-core machine, more than most
// single parts of the edge's config cost; this benchmark prices each part
// to a fraction of a percent. Kernel time (the same socket calls for both
// Envoys) is not in it; on this machine user time is most of Envoy's CPU
// per request, and grows with these counts.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/wsedge/wsedge/coderhttp"
	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/envoyrun"
	"github.com/wsedge/wsedge/tokens"
)

// envoyCostRequests is how many warm requests are counted per Envoy.
const envoyCostRequests = 1000

// envoyCostVariant is one Envoy bootstrap to price.
type envoyCostVariant struct {
	name string
	// config edits wsedge's generator config (nil: the defaults).
	config func(*envoy.Config)
	// edit changes the generated bootstrap, for accounting only: never a
	// config wsedge ships.
	edit func(testing.TB, *bootstrapv3.Bootstrap)
	// upstreamHeader, if set, is one more header the upstream answers
	// with (name, value).
	upstreamHeader [2]string
}

// envoyCostVariants: wsedge's default edge, its access log modes, and the
// default without one part each (the difference is that part's price) or
// with one more (with-*: the same, the other way).
var envoyCostVariants = []envoyCostVariant{
	{name: "default"},
	// The dialer answers every app response with Coder's Vary: Origin;
	// what one header an upstream sends costs Envoy.
	{name: "with-upstream-vary-origin", upstreamHeader: [2]string{"Vary", "Origin"}},
	// --upstream-stats: the router's dynamic stats for the dialer cluster
	// (per-status, completion and latency copies), which the minimal
	// Envoy charges by default.
	{name: "with-upstream-stats", config: func(c *envoy.Config) { c.UpstreamStats = true }},
	{name: "access-log=all", config: func(c *envoy.Config) { c.AccessLog = envoy.AccessLogAll }},
	{name: "access-log=off", config: func(c *envoy.Config) { c.AccessLog = envoy.AccessLogOff }},
	{name: "without-use-remote-address", edit: editHCM(func(h *hcmv3.HttpConnectionManager) { h.UseRemoteAddress = nil })},
	{name: "without-request-headers-timeout", edit: editHCM(func(h *hcmv3.HttpConnectionManager) { h.RequestHeadersTimeout = nil })},
	{name: "without-x-coder-request-id", edit: editRoutes(func(r *routev3.Route) {
		var keep []*corev3.HeaderValueOption
		for _, h := range r.ResponseHeadersToAdd {
			if !strings.EqualFold(h.GetHeader().GetKey(), coderhttp.RequestIDHeader) {
				keep = append(keep, h)
			}
		}
		r.ResponseHeadersToAdd = keep
	})},
	{name: "without-warm-route-header-matchers", edit: editRoutes(func(r *routev3.Route) {
		if strings.HasSuffix(r.GetName(), "-warm") {
			r.Match.Headers = nil
		}
	})},
	{name: "without-filters-the-warm-route-disables", edit: editHCM(func(h *hcmv3.HttpConnectionManager) {
		off := map[string]bool{}
		for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if strings.HasSuffix(r.GetName(), "-warm") {
					for name := range r.GetTypedPerFilterConfig() {
						off[name] = true
					}
				}
			}
		}
		var chain []*hcmv3.HttpFilter
		for _, f := range h.GetHttpFilters() {
			if !off[f.GetName()] {
				chain = append(chain, f)
			}
		}
		h.HttpFilters = chain
		for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				for name := range off {
					delete(r.TypedPerFilterConfig, name)
				}
			}
		}
	})},
}

// BenchmarkEnvoyInstructions counts the user-space instructions Envoy
// executes per warm request: the same 1 KiB GET with a signed app token
// cookie to a subdomain app, over one kept-alive connection, through
// wsedge's generated edge (fast path on, so it takes the warm route: no
// ext_authz, no jwt_authn) and through the minimal Envoy of
// BenchmarkWarmPathVsReference (listener, router, one static cluster), the
// baseline, in the same run. The upstream is a loopback server that
// answers as the dialer would; authz is not needed on the warm route (its
// JWKS is served, so jwt_authn's fetches succeed in the background as in
// production).
//
// Per variant: instr/req (callgrind's Ir over envoyCostRequests requests
// after a warm-up, instrumentation on only around them). Variants named
// without-* are the default edge without one part, for accounting only;
// default − variant is what that part costs. Needs valgrind
// (callgrind_control beside it); skipped without.
func BenchmarkEnvoyInstructions(b *testing.B) {
	valgrind, err := exec.LookPath("valgrind")
	if err != nil {
		b.Skip("valgrind is not installed (make profiler)")
	}
	control, err := exec.LookPath("callgrind_control")
	if err != nil {
		b.Skip("callgrind_control is not installed (Debian package valgrind)")
	}
	bin, err := envoyrun.FindBinary()
	if err != nil {
		b.Skip(err)
	}
	app := startCostUpstream(b, [2]string{})
	jwks := startCostJWKS(b)
	pricer := &envoyPricer{valgrind: valgrind, control: control, envoy: bin}

	port := strconv.Itoa(int(app.Port()))
	baseline := pricer.price(b, fmt.Appendf(nil, minimalBootstrap, port), "direct")
	for _, v := range envoyCostVariants {
		b.Run(v.name, func(b *testing.B) {
			up := app
			if v.upstreamHeader[0] != "" {
				up = startCostUpstream(b, v.upstreamHeader)
			}
			c := costEdgeConfig(b, up, jwks)
			if v.config != nil {
				v.config(&c)
			}
			bs, err := envoy.Bootstrap(c)
			if err != nil {
				b.Fatal(err)
			}
			if v.edit != nil {
				v.edit(b, bs)
			}
			n := pricer.price(b, bootstrapYAML(b, bs), envoy.ListenerName)
			b.ReportMetric(n, "instr/req")
			b.ReportMetric(baseline, "baseline-instr/req")
		})
	}
}

// costEdgeConfig is wsedge's default edge on loopback ports in front of
// the upstream app (as the dialer) and the JWKS server (as authz's JWKS
// listener); ext_authz goes to a closed port, the warm route never calls
// it.
func costEdgeConfig(tb testing.TB, app, jwks netip.AddrPort) envoy.Config {
	c := envoy.DefaultConfig()
	c.ListenAddr = netip.MustParseAddrPort("127.0.0.1:0")
	c.AdminAddr = netip.MustParseAddrPort("127.0.0.1:0")
	c.AccessURLHost, c.WildcardHostname = accessHost, wildcardHost
	c.DashboardURL = "http://" + dashboardHost
	c.DialerAddr = app.String()
	c.AuthzJWKSAddr = jwks.String()
	c.AuthzAddr = closedPort(tb)
	return c
}

// envoyPricer runs an Envoy under callgrind and counts a warm request.
type envoyPricer struct {
	valgrind, control, envoy string
}

// price starts bootstrap's Envoy under callgrind, sends warm-up requests
// to its listener, then counts envoyCostRequests more.
func (p *envoyPricer) price(tb testing.TB, bootstrap []byte, listener string) float64 {
	tb.Helper()
	dir := tb.TempDir()
	// callgrind runs the guest in its own process, so the pid Start gets
	// is Envoy's; instrumentation stays off until the warm-up is done.
	wrapper := filepath.Join(dir, "envoy-under-callgrind")
	script := fmt.Sprintf("#!/bin/sh\nexec %q --tool=callgrind --instr-atstart=no --callgrind-out-file=%q %q \"$@\"\n",
		p.valgrind, filepath.Join(dir, "callgrind.out"), p.envoy)
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	proc, err := envoyrun.Start(ctx, envoyrun.Options{
		Binary: wrapper, Bootstrap: bootstrap, Dir: filepath.Join(dir, "envoy"),
		LogLevel: "error", ReadyTimeout: 3 * time.Minute,
	})
	if err != nil {
		tb.Fatal(err)
	}
	defer proc.Stop()
	addr, err := proc.ListenerAddr(ctx, listener)
	if err != nil {
		tb.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	send := func(n int) {
		for range n {
			if err := costRequest(c, addr); err != nil {
				tb.Fatal(err)
			}
		}
	}
	send(100)
	pid := strconv.Itoa(proc.Pid())
	if out, err := exec.CommandContext(ctx, p.control, "--instr=on", pid).CombinedOutput(); err != nil {
		tb.Fatalf("callgrind_control --instr=on: %v: %s", err, out)
	}
	send(envoyCostRequests)
	// The dump is written as callgrind.out.1: only the counted requests
	// (and whatever Envoy's timers did meanwhile).
	if out, err := exec.CommandContext(ctx, p.control, "--dump", pid).CombinedOutput(); err != nil {
		tb.Fatalf("callgrind_control --dump: %v: %s", err, out)
	}
	total, err := callgrindTotal(filepath.Join(dir, "callgrind.out.1"))
	if err != nil {
		tb.Fatal(err)
	}
	return float64(total) / envoyCostRequests
}

// costRequest is the warm request: a 1 KiB GET to a subdomain app with a
// signed app token cookie among a browser's others. Envoy only matches
// the cookie by name on the warm route (the upstream checks nothing).
func costRequest(c *http.Client, addr netip.AddrPort) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr.String()+"/bytes?n="+strconv.Itoa(appBytes), nil)
	if err != nil {
		return err
	}
	req.Host = codeHost
	req.Header.Set("Cookie", "theme=dark; "+tokens.SignedAppTokenCookie+"=eyJhbGciOiJIUzUxMiIsImtpZCI6IjEifQ.e30.c2ln")
	req.Header.Set("Accept", "*/*")
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK || len(body) != appBytes {
		return fmt.Errorf("GET %s: status %d, %d bytes (want 200 and %d): %.200q", req.URL, res.StatusCode, len(body), appBytes, body)
	}
	return nil
}

// callgrindTotal is the "totals:" line of a callgrind dump (Ir).
func callgrindTotal(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "totals:"); ok {
			return strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no totals line", path)
}

// startCostUpstream answers every request as the demo app answers a GET
// of its /bytes: 1 KiB with its headers, and extra if it names one.
func startCostUpstream(tb testing.TB, extra [2]string) netip.AddrPort {
	tb.Helper()
	body := devagent.PatternBytes(appBytes)
	return serveLoopback(tb, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		if extra[0] != "" {
			h.Set(extra[0], extra[1])
		}
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		h.Set("Server", "wsedge-demo-app")
		_, _ = w.Write(body)
	}))
}

// startCostJWKS serves a JWKS of one HS512 key, as authz's JWKS listener
// does, so jwt_authn's background fetches succeed.
func startCostJWKS(tb testing.TB) netip.AddrPort {
	tb.Helper()
	return serveLoopback(tb, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"keys":[{"kty":"oct","kid":"1","alg":"HS512","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]}`)
	}))
}

// serveLoopback serves h on a loopback port until the benchmark ends.
func serveLoopback(tb testing.TB, h http.Handler) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// closedPort is a loopback host:port nothing listens on.
func closedPort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// bootstrapYAML renders an edited bootstrap.
func bootstrapYAML(tb testing.TB, bs *bootstrapv3.Bootstrap) []byte {
	tb.Helper()
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(bs)
	if err != nil {
		tb.Fatal(err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		tb.Fatal(err)
	}
	return y
}

// editHCM edits the edge listener's HTTP connection manager.
func editHCM(f func(*hcmv3.HttpConnectionManager)) func(testing.TB, *bootstrapv3.Bootstrap) {
	return func(tb testing.TB, bs *bootstrapv3.Bootstrap) {
		tb.Helper()
		for _, l := range bs.GetStaticResources().GetListeners() {
			if l.GetName() != envoy.ListenerName {
				continue
			}
			for _, fc := range l.GetFilterChains() {
				for _, nf := range fc.GetFilters() {
					var h hcmv3.HttpConnectionManager
					if err := nf.GetTypedConfig().UnmarshalTo(&h); err != nil {
						tb.Fatal(err)
					}
					f(&h)
					a, err := anypb.New(&h)
					if err != nil {
						tb.Fatal(err)
					}
					nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
				}
			}
		}
	}
}

// editRoutes edits every route of the edge listener.
func editRoutes(f func(*routev3.Route)) func(testing.TB, *bootstrapv3.Bootstrap) {
	return editHCM(func(h *hcmv3.HttpConnectionManager) {
		for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				f(r)
			}
		}
	})
}
