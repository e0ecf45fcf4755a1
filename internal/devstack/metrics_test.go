package devstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/internal/testutil"
)

// families maps each gathered family name to its series' label sets and
// values (counters, gauges; histograms by sample count).
func families(t *testing.T, reg *prometheus.Registry) map[string][]map[string]string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			labels["_value"] = formatFloat(v)
			out[mf.GetName()] = append(out[mf.GetName()], labels)
		}
	}
	return out
}

func formatFloat(v float64) string {
	if v == 0 {
		return "0"
	}
	if v >= 1 {
		return "positive"
	}
	return "fraction"
}

// has reports whether a family has a series with the given labels and a
// value of at least one.
func has(fams map[string][]map[string]string, name string, labels map[string]string) bool {
next:
	for _, s := range fams[name] {
		for k, v := range labels {
			if s[k] != v {
				continue next
			}
		}
		if s["_value"] == "positive" {
			return true
		}
	}
	return false
}

// TestDevStackExportsComponentMetrics runs the whole dev deployment and
// checks that, after its self-check request went through, each service's
// registry reports its components (the primary client, key cache,
// registration, coordination, dialer and authz), and that the dialer's log
// line for that request carries the request ID of Envoy's access log line.
func TestDevStackExportsComponentMetrics(t *testing.T) {
	authzReg, dialerReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	logs := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dev, err := devstack.StartDev(ctx, devstack.DevConfig{
		DashboardURL:     &url.URL{Scheme: "http", Host: "dashboard.metrics.test"},
		AccessURL:        &url.URL{Scheme: "http", Host: "proxy.metrics.test"},
		WildcardHostname: "*.apps.metrics.test",
		PrimaryListen:    netip.MustParseAddrPort("127.0.0.1:0"),
		EdgeListen:       netip.MustParseAddrPort("127.0.0.1:0"),
		EnvoyBinary:      testutil.EnvoyBinary(t),
		Dir:              t.TempDir(),
		Logger:           slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AuthzRegisterer:  authzReg,
		DialerRegisterer: dialerReg,
		// The requests below succeed: a line each (the default logs
		// errors only).
		Envoy: func(c *envoy.Config) { c.AccessLog = envoy.AccessLogAll },
	})
	if err != nil {
		t.Fatalf("StartDev: %v", err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	az := families(t, authzReg)
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"wsedge_primary_request_duration_seconds", map[string]string{"endpoint": "crypto-keys", "outcome": "200"}},
		{"wsedge_primary_key_fetches_total", map[string]string{"feature": "workspace_apps_token", "outcome": "ok"}},
		{"wsedge_primary_keys", map[string]string{"feature": "workspace_apps_api_key"}},
		{"wsedge_authz_checks_total", nil},
		{"wsedge_authz_check_duration_seconds", nil},
	} {
		if !has(az, c.name, c.labels) {
			t.Errorf("authz registry: no %s%v with a value: %v", c.name, c.labels, az[c.name])
		}
	}
	checkRequestIDCorrelation(t, dev, logs)

	dl := families(t, dialerReg)
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"wsedge_primary_request_duration_seconds", map[string]string{"endpoint": "register", "outcome": "201"}},
		{"wsedge_primary_registration_healthy", nil},
		{"wsedge_primary_registration_last_success_timestamp_seconds", nil},
		{"wsedge_primary_keys", map[string]string{"feature": "workspace_apps_token"}},
		{"wsedge_coordinate_connected", nil},
		{"wsedge_coordinate_tunnels", map[string]string{"state": "ready"}},
		{"wsedge_coordinate_sessions_total", nil},
		{"wsedge_dialer_agent_dial_duration_seconds", map[string]string{"outcome": "ok"}},
		{"wsedge_dialer_requests_total", nil},
	} {
		if !has(dl, c.name, c.labels) {
			t.Errorf("dialer registry: no %s%v with a value: %v", c.name, c.labels, dl[c.name])
		}
	}
	// The dialer labels requests by route pattern, never by path or user.
	for _, s := range dl["wsedge_dialer_requests_total"] {
		if !dialerRoutes[s["route"]] {
			t.Errorf("wsedge_dialer_requests_total has route %q, not a route pattern", s["route"])
		}
	}
	checkNativeHistograms(t, "authz", authzReg)
	checkNativeHistograms(t, "dialer", dialerReg)
}

// dialerRoutes are the route patterns the dialer labels requests with.
var dialerRoutes = map[string]bool{
	"path": true, "subdomain": true, "terminal": true, "derp": true, "healthz": true, "healthz-report": true,
	"buildinfo": true, "latency-check": true, "logout": true, "invalid": true, "unknown": true,
}

// checkNativeHistograms: every latency histogram that has observations
// is exposed both as a native histogram (a schema and spans) and with
// its classic buckets, for Prometheus servers with and without native
// histogram support.
func checkNativeHistograms(t *testing.T, service string, reg *prometheus.Registry) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil || h.GetSampleCount() == 0 {
				continue
			}
			seen++
			if h.Schema == nil || len(h.GetPositiveSpan())+len(h.GetNegativeSpan()) == 0 && h.GetZeroCount() == 0 {
				t.Errorf("%s: %s is not a native histogram", service, mf.GetName())
			}
			if len(h.GetBucket()) == 0 {
				t.Errorf("%s: %s lost its classic buckets", service, mf.GetName())
			}
		}
	}
	if seen == 0 {
		t.Errorf("%s: no histogram with observations", service)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// jsonField collects one string field of every JSON line of text whose
// filter field matches.
func jsonField(text, field string, filter func(map[string]any) bool) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || !filter(m) {
			continue
		}
		if v, _ := m[field].(string); v != "" && v != "-" {
			out[v] = true
		}
	}
	return out
}

func checkRequestIDCorrelation(t *testing.T, dev *devstack.Dev, logs *lockedBuffer) {
	t.Helper()
	dialerIDs := jsonField(logs.String(), "request_id", func(m map[string]any) bool { return m["msg"] == "dialer: request" })
	if len(dialerIDs) == 0 {
		t.Fatal("no dialer request line with a request_id")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(dev.Envoy.StdoutPath())
		envoyIDs := jsonField(string(b), "request_id", func(m map[string]any) bool { _, ok := m["upstream_host"]; return ok })
		for id := range dialerIDs {
			if envoyIDs[id] {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dialer request_id %v in Envoy's access log:\n%s", dialerIDs, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
