package authz

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Native-histogram resolution of wsedge's latency histograms: buckets 10%
// wide, at most 160 of them (the resolution drops, never the series, when
// latencies spread wider), reset at most hourly.
const (
	nativeBucketFactor = 1.1
	nativeMaxBuckets   = 160
)

// metrics are the Check service's Prometheus series. Shed Checks count
// under outcome shed_checks (every Check slot busy) and shed_issue (every
// slot for calls to the primary busy).
type metrics struct {
	checks   *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsedge_authz_checks_total",
			Help: "Check calls by outcome.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsedge_authz_check_duration_seconds",
			Help:    "Time to decide one Check call.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
			// Native histogram alongside the classic buckets (servers
			// without native-histogram support keep reading the latter).
			NativeHistogramBucketFactor:     nativeBucketFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: time.Hour,
		}),
	}
	if reg != nil {
		reg.MustRegister(m.checks, m.duration)
	}
	return m
}

// registerInFlight exposes how much of Limits is in use.
func registerInFlight(reg prometheus.Registerer, svc *Service) {
	if reg == nil {
		return
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsedge_authz_checks_in_flight",
			Help: "Check calls being decided (bounded by --max-checks).",
		}, func() float64 { return float64(len(svc.checks)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsedge_authz_issue_calls_in_flight",
			Help: "Calls to the primary for signed app tokens in flight (bounded by --max-issue-calls).",
		}, func() float64 { return float64(len(svc.issuer.calls)) }),
	)
}

// start times one Check; the returned func records its outcome.
func (m *metrics) start() func(outcome string) {
	t0 := time.Now()
	return func(outcome string) {
		m.duration.Observe(time.Since(t0).Seconds())
		if outcome == "" {
			outcome = "unknown"
		}
		m.checks.WithLabelValues(outcome).Inc()
	}
}
