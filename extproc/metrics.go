package extproc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the processor's Prometheus series.
type metrics struct {
	messages        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	cookiesRemoved  prometheus.Counter
	missingMetadata prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsedge_extproc_messages_total",
			Help: "ext_proc messages handled, by phase (before_authz, request, response) and outcome.",
		}, []string{"phase", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsedge_extproc_message_duration_seconds",
			Help:    "Time to answer one ext_proc message, by phase.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},

			// Also a native histogram (buckets 10% wide, at most 160,
			// reset at most hourly); classic buckets kept for servers
			// without native-histogram support.
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"phase"}),
		cookiesRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsedge_extproc_coder_cookies_removed_total",
			Help: "Set-Cookie lines for Coder cookies removed from app responses.",
		}),
		missingMetadata: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsedge_extproc_missing_metadata_total",
			Help: "App responses processed without authz metadata (treated as path apps: CORS stripped, nosniff).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.duration, m.cookiesRemoved, m.missingMetadata)
	}
	return m
}

// observe records one answered message.
func (m *metrics) observe(phase, outcome string, started time.Time) {
	m.duration.WithLabelValues(phase).Observe(time.Since(started).Seconds())
	m.messages.WithLabelValues(phase, outcome).Inc()
}
