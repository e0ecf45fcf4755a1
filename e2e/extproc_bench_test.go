package e2e

import (
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/wsedge/wsedge/envoy"
)

// withoutExtProc is the generated bootstrap for cfg with both ext_proc
// filters and their per-route settings taken out: the edge as it was
// before the app policy, for measuring what the hop costs.
func withoutExtProc(b testing.TB, cfg envoy.Config) []byte {
	b.Helper()
	bs, err := envoy.Bootstrap(cfg)
	if err != nil {
		b.Fatal(err)
	}
	fc := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0]
	var m hcmv3.HttpConnectionManager
	if err := fc.GetTypedConfig().UnmarshalTo(&m); err != nil {
		b.Fatal(err)
	}
	isExtProc := func(name string) bool { return name == envoy.ExtProcFilter || name == envoy.ExtProcPreflightFilter }
	m.HttpFilters = slices.DeleteFunc(m.HttpFilters, func(f *hcmv3.HttpFilter) bool { return isExtProc(f.GetName()) })
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			delete(r.TypedPerFilterConfig, envoy.ExtProcFilter)
			delete(r.TypedPerFilterConfig, envoy.ExtProcPreflightFilter)
		}
	}
	if err := fc.GetTypedConfig().MarshalFrom(&m); err != nil {
		b.Fatal(err)
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(bs)
	if err != nil {
		b.Fatal(err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		b.Fatal(err)
	}
	return y
}

// BenchmarkExtProcHop measures the latency the app-policy ext_proc adds to
// a cross-origin GET of a subdomain app (one response-headers message, the
// request facts as attributes, the origin's owner resolved by a stand-in),
// in the same run against (a) the same edge whose processor changes
// nothing (the cost of the hop itself) and (b) the edge without ext_proc.
// Each iteration sends one request each way, in alternating order, through
// two real Envoys sharing authz, the processor and the app. Reported: the
// p50 of each and the p50 added by ext_proc, absolute and relative.
func BenchmarkExtProcHop(b *testing.B) {
	f := &corsFakes{}
	st := startEdge(b, withCORSFakes(f), WithoutFastPath())
	plainClient := startEdge(b, WithBootstrap(withoutExtProc(b, st.cfg), envoy.ListenerName)).client

	get := func(c *http.Client) time.Duration {
		req, err := http.NewRequest("GET", "http://"+aliceAPI+"/v1/items", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Origin", aliceWeb)
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return d
	}
	// Warm both paths (connections, owner lookups).
	for range 20 {
		get(st.client)
		get(plainClient)
	}
	var with, noop, without []time.Duration
	i := 0
	for b.Loop() { // setup above runs once
		i++
		if i%2 == 0 {
			with = append(with, get(st.client))
			without = append(without, get(plainClient))
		} else {
			without = append(without, get(plainClient))
			with = append(with, get(st.client))
		}
		f.proc.failure.Store("noop")
		noop = append(noop, get(st.client))
		f.proc.failure.Store("")
	}
	p50 := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds())
	}
	pw, pn, po := p50(with), p50(noop), p50(without)
	b.ReportMetric(pw, "p50-extproc-µs")
	b.ReportMetric(pn, "p50-noop-extproc-µs")
	b.ReportMetric(po, "p50-no-extproc-µs")
	b.ReportMetric(pw-po, "p50-added-µs")
	if po > 0 {
		b.ReportMetric(100*(pw-po)/po, "p50-added-%")
	}
}
