package coordinate_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsedge/wsedge/tailnet/coordinate"
)

// gathered maps "name" or "name{label=value}" to the value of every
// series the registry reports.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += "{" + lp.GetName() + "=" + lp.GetValue() + "}"
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[key] = v
		}
	}
	return out
}

func TestCollectorReportsTunnels(t *testing.T) {
	pr := newPair(t, coordinate.Options{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(pr.proxy.Collector())
	want := func(name string, v float64) {
		t.Helper()
		got, ok := gathered(t, reg)[name]
		if !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, v)
		}
	}
	want(coordinate.MetricConnected, 1)
	want(coordinate.MetricConnections, 0)
	want(coordinate.MetricTunnels+"{state=ready}", 0)

	release := ensure(t, pr.proxy, pr.agentID)
	r2 := ensure(t, pr.proxy, pr.agentID)
	want(coordinate.MetricConnections, 2)
	want(coordinate.MetricTunnels+"{state=ready}", 1)
	want(coordinate.MetricTunnels+"{state=pending}", 0)
	want(coordinate.MetricSessions, 1)
	release()
	r2()
	want(coordinate.MetricConnections, 0)
	want(coordinate.MetricTunnels+"{state=ready}", 1) // kept until idle
	if n := len(gathered(t, reg)); n != 7 {
		t.Errorf("%d series, want 7", n)
	}

	_ = pr.proxy.Close()
	want(coordinate.MetricConnected, 0)
}
