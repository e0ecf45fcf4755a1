package derp

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// series maps "name" or "name{label=value}" to the value of every series
// the registry reports.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
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

func TestCollectorReportsClientsTrafficAndMesh(t *testing.T) {
	const coderKey = "abcdefghijklmnopqrstuvwxyz012345"
	a := newReplica(t, Options{MeshKey: coderKey})
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.s.Collector())
	before := series(t, reg)
	for _, name := range []string{MetricConnections, MetricHomeConnections, MetricClients + "{location=local}", MetricClients + "{location=remote}",
		MetricAccepts, MetricBytes + "{direction=received}", MetricBytes + "{direction=sent}", MetricPackets + "{direction=sent}",
		MetricPacketsForwarded + "{direction=in}", MetricPacketsForwarded + "{direction=out}", MetricMeshPeers} {
		if v, ok := before[name]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) before any client, want 0", name, v, ok)
		}
	}

	roots := rootsOf(a)
	c1, k1 := client(t, a, roots)
	c2, k2 := client(t, a, roots)
	got := packets(c2)
	deliver(t, c1.Send, k2, k1, "hello through the relay", got)
	s := series(t, reg)
	if s[MetricConnections] != 2 || s[MetricClients+"{location=local}"] != 2 || s[MetricAccepts] != 2 {
		t.Errorf("connections %v, local clients %v, accepts %v; want 2, 2, 2", s[MetricConnections], s[MetricClients+"{location=local}"], s[MetricAccepts])
	}
	if s[MetricPackets+"{direction=sent}"] < 1 || s[MetricBytes+"{direction=sent}"] < float64(len("hello through the relay")) {
		t.Errorf("packets sent %v, bytes sent %v", s[MetricPackets+"{direction=sent}"], s[MetricBytes+"{direction=sent}"])
	}

	if err := a.s.SetMeshPeers([]string{"https://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if s := series(t, reg); s[MetricMeshPeers] != 1 {
		t.Errorf("mesh peers %v, want 1", s[MetricMeshPeers])
	}
	_ = c1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for series(t, reg)[MetricConnections] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("connections still %v after a client left", series(t, reg)[MetricConnections])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
