package authz

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Check service's Prometheus series.
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
		}),
	}
	if reg != nil {
		reg.MustRegister(m.checks, m.duration)
	}
	return m
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
