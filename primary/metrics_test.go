package primary

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wsedge/wsedge/tokens"
)

// sample finds one series of a gathered metric family by its labels.
func sample(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) uint64 {
	t.Helper()
	m := sample(t, reg, name, labels)
	if m == nil {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}

func TestClientRequestDurationByEndpointAndOutcome(t *testing.T) {
	f, srv := newFakeCoderd(t)
	reg := prometheus.NewRegistry()
	c := f.client(t, srv, func(o *Options) { o.Registerer = reg })
	ctx := context.Background()
	if _, err := c.BuildInfo(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BuildInfo(ctx); err != nil {
		t.Fatal(err)
	}
	// A second client on the same registry counts into the same series.
	bad := f.client(t, srv, func(o *Options) {
		o.ProxyToken = f.proxyID.String() + ":" + strings.Repeat("0", 64)
		o.Registerer = reg
	})
	if _, err := bad.CryptoKeys(ctx, tokens.FeatureAppToken); !IsStatus(err, 401) {
		t.Fatalf("err = %v, want 401", err)
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed, _ := url.Parse("http://" + ln.Addr().String())
	_ = ln.Close()
	down, err := New(Options{URL: closed, ProxyToken: f.token(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	downReg := prometheus.NewRegistry()
	downReg.MustRegister(down.Collector())
	if _, err := down.BuildInfo(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}

	for _, tc := range []struct {
		reg              *prometheus.Registry
		endpoint, outcom string
		want             uint64
	}{
		{reg, "buildinfo", "200", 2},
		{reg, "crypto-keys", "401", 1},
		{reg, "crypto-keys", "200", 0},
		{downReg, "buildinfo", "error", 1},
	} {
		if got := histogramCount(t, tc.reg, MetricRequestDuration, map[string]string{"endpoint": tc.endpoint, "outcome": tc.outcom}); got != tc.want {
			t.Errorf("%s %s: %d calls, want %d", tc.endpoint, tc.outcom, got, tc.want)
		}
	}
}

func TestEndpointLabelIsBounded(t *testing.T) {
	if got := endpointLabel("/api/v2/workspaceproxies/me/issue-signed-app-token"); got != "issue-signed-app-token" {
		t.Fatalf("got %q", got)
	}
	if got := endpointLabel("/api/v2/users/alice"); got != "other" {
		t.Fatalf("got %q", got)
	}
}

func TestKeyCacheMetrics(t *testing.T) {
	clk := newFakeClock(t0)
	src := newKeyServer(
		testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{}),
		testKey(t, tokens.FeatureAppToken, 2, t0, time.Time{}),
		testKey(t, tokens.FeatureAPIKey, 1, t0, time.Time{}),
	)
	reg := prometheus.NewRegistry()
	k := NewKeyCache(src, KeyCacheOptions{Now: clk.Now, Registerer: reg})
	gauge := func(name string, f tokens.Feature) float64 {
		m := sample(t, reg, name, map[string]string{"feature": string(f)})
		if m == nil {
			t.Fatalf("no %s{feature=%s}", name, f)
		}
		return m.GetGauge().GetValue()
	}
	counter := func(f tokens.Feature, outcome string) float64 {
		m := sample(t, reg, MetricKeyFetches, map[string]string{"feature": string(f), "outcome": outcome})
		if m == nil {
			t.Fatalf("no fetch counter %s %s", f, outcome)
		}
		return m.GetCounter().GetValue()
	}
	if gauge(MetricKeys, tokens.FeatureAppToken) != 0 || gauge(MetricKeyLastSuccess, tokens.FeatureAppToken) != 0 || counter(tokens.FeatureAppToken, "error") != 0 {
		t.Fatal("series not zero before the first fetch")
	}
	if err := k.Prime(context.Background()); err != nil {
		t.Fatal(err)
	}
	if gauge(MetricKeys, tokens.FeatureAppToken) != 2 || gauge(MetricKeys, tokens.FeatureAPIKey) != 1 {
		t.Fatalf("keys gauges %v %v", gauge(MetricKeys, tokens.FeatureAppToken), gauge(MetricKeys, tokens.FeatureAPIKey))
	}
	if got := gauge(MetricKeyLastSuccess, tokens.FeatureAPIKey); got != float64(t0.UnixNano())/1e9 {
		t.Fatalf("last success %v, want %v", got, t0.Unix())
	}
	src.mu.Lock()
	src.err = errors.New("primary down")
	src.mu.Unlock()
	if err := k.Prime(context.Background()); err == nil {
		t.Fatal("Prime succeeded")
	}
	if counter(tokens.FeatureAppToken, "ok") != 1 || counter(tokens.FeatureAppToken, "error") != 1 || counter(tokens.FeatureAPIKey, "error") != 1 {
		t.Fatalf("fetch counters ok=%v error=%v", counter(tokens.FeatureAppToken, "ok"), counter(tokens.FeatureAppToken, "error"))
	}
	if gauge(MetricKeys, tokens.FeatureAppToken) != 2 {
		t.Fatal("a failed refresh must keep (and report) the keys held")
	}
	// A second cache on the same registry does not panic.
	_ = NewKeyCache(src, KeyCacheOptions{Registerer: reg})
}

func TestRegistrarMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newRegistrarHarness(t, func(o *RegistrarOptions) { o.Registerer = reg; o.MaxFailures = 1 })
	value := func(name string) float64 {
		m := sample(t, reg, name, nil)
		if m == nil {
			t.Fatalf("no %s", name)
		}
		return m.GetGauge().GetValue()
	}
	if value(MetricRegistrationHealthy) != 0 {
		t.Fatal("healthy before registering")
	}
	if _, err := h.r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if value(MetricRegistrationHealthy) != 1 || value(MetricRegistrationFailures) != 0 || value(MetricRegistrationLastSuccess) != float64(t0.UnixNano())/1e9 {
		t.Fatalf("after start: healthy %v failures %v last %v", value(MetricRegistrationHealthy), value(MetricRegistrationFailures), value(MetricRegistrationLastSuccess))
	}
	h.setFail(true)
	stop := h.run(t)
	for range 2 {
		h.timer.next(t)
		h.timer.tick()
	}
	h.timer.next(t)
	stop()
	if value(MetricRegistrationFailures) != 2 || value(MetricRegistrationHealthy) != 0 {
		t.Fatalf("after 2 failures: failures %v healthy %v", value(MetricRegistrationFailures), value(MetricRegistrationHealthy))
	}
}
