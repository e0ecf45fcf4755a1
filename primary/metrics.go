package primary

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsedge/wsedge/tokens"
)

// Metric names of this package (wsedge_primary_*). Labels are bounded:
// endpoint is one of the API's fixed paths (or "other"), outcome an HTTP
// status code or "error", feature one of the two key features.
const (
	MetricRequestDuration         = "wsedge_primary_request_duration_seconds"
	MetricKeyFetches              = "wsedge_primary_key_fetches_total"
	MetricKeys                    = "wsedge_primary_keys"
	MetricKeyLastSuccess          = "wsedge_primary_key_last_success_timestamp_seconds"
	MetricRegistrationHealthy     = "wsedge_primary_registration_healthy"
	MetricRegistrationFailures    = "wsedge_primary_registration_consecutive_failures"
	MetricRegistrationLastSuccess = "wsedge_primary_registration_last_success_timestamp_seconds"
	MetricRegistrationSiblings    = "wsedge_primary_registration_siblings"
)

// endpoints names the API paths for the endpoint label.
var endpoints = map[string]string{
	pathBuildInfo:       "buildinfo",
	pathRegister:        "register",
	pathDeregister:      "deregister",
	pathCryptoKeys:      "crypto-keys",
	pathIssueToken:      "issue-signed-app-token",
	pathResolveAppOwner: "resolve-app-owner",
	pathAppStats:        "app-stats",
}

func endpointLabel(path string) string {
	if e, ok := endpoints[path]; ok {
		return e
	}
	return "other"
}

// newRequestDuration is the client's latency histogram: every call to
// the primary, by endpoint and outcome, timed until the response headers.
func newRequestDuration() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricRequestDuration,
		Help:    "Calls to the Coder primary until its response headers, by endpoint and outcome (HTTP status code, or error when no answer came).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},

		// Also a native histogram (buckets 10% wide, at most 160,
		// reset at most hourly); classic buckets kept for servers
		// without native-histogram support.
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}, []string{"endpoint", "outcome"})
}

// instrumentedTransport times every round trip to the primary.
type instrumentedTransport struct {
	next     http.RoundTripper
	duration *prometheus.HistogramVec
}

func (t instrumentedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.next.RoundTrip(req)
	outcome := "error"
	if err == nil {
		outcome = strconv.Itoa(res.StatusCode)
	}
	t.duration.WithLabelValues(endpointLabel(req.URL.Path), outcome).Observe(time.Since(start).Seconds())
	return res, err
}

// instrument wraps the client's transport (nil: http.DefaultTransport).
// Clients registered with the same Registerer share one histogram.
func (c *Client) instrument(hc *http.Client, reg prometheus.Registerer) {
	c.requestDuration = newRequestDuration()
	if reg != nil {
		c.requestDuration = registerCollector(reg, c.log, c.requestDuration)
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = instrumentedTransport{next: next, duration: c.requestDuration}
}

// Collector is the client's request histogram, for registering with a
// Registerer after New (Options.Registerer does it at New).
func (c *Client) Collector() prometheus.Collector { return c.requestDuration }

// registerCollector registers col and returns the collector in effect:
// when the same series are already registered (a second client or cache
// on one registry) it is the existing one of the same type, so that both
// count into it; gauge functions of a second cache are dropped (the first
// one reports).
func registerCollector[C prometheus.Collector](reg prometheus.Registerer, log *slog.Logger, col C) C {
	err := reg.Register(col)
	if err == nil {
		return col
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
		return col
	}
	log.Warn("primary: metrics not registered", slog.Any("error", err))
	return col
}

// countingFetcher counts key fetches by feature and outcome.
type countingFetcher struct {
	next    KeyFetcher
	fetches *prometheus.CounterVec
}

func (f countingFetcher) CryptoKeys(ctx context.Context, feat tokens.Feature) ([]tokens.Key, error) {
	keys, err := f.next.CryptoKeys(ctx, feat)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	f.fetches.WithLabelValues(string(feat), outcome).Inc()
	return keys, err
}

// registerMetrics counts the cache's fetches (periodic refreshes and
// unknown-kid refetches alike) and reports its keys per feature.
func (k *KeyCache) registerMetrics(reg prometheus.Registerer) {
	fetches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricKeyFetches,
		Help: "Crypto key fetches from the primary (refreshes and refetches for unknown key IDs), by feature and outcome (ok, error).",
	}, []string{"feature", "outcome"})
	for _, f := range Features {
		fetches.WithLabelValues(string(f), "ok")
		fetches.WithLabelValues(string(f), "error")
	}
	fetches = registerCollector(reg, k.log, fetches)
	k.src = countingFetcher{next: k.src, fetches: fetches}
	for _, f := range Features {
		labels := prometheus.Labels{"feature": string(f)}
		registerCollector[prometheus.Collector](reg, k.log, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: MetricKeys, Help: "Crypto keys held, by feature.", ConstLabels: labels,
		}, func() float64 { return float64(k.status(f).Keys) }))
		registerCollector[prometheus.Collector](reg, k.log, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: MetricKeyLastSuccess, Help: "Unix time of the last successful key fetch, by feature (0: never).", ConstLabels: labels,
		}, func() float64 { return unixSeconds(k.status(f).LastSuccess) }))
	}
}

// status is one feature's entry of Status.
func (k *KeyCache) status(f tokens.Feature) KeyCacheStatus {
	for _, s := range k.Status() {
		if s.Feature == f {
			return s
		}
	}
	return KeyCacheStatus{Feature: f}
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// registerMetrics reports the registration's health from Health().
// Failed attempts also show in wsedge_primary_request_duration_seconds
// with endpoint="register" and a non-201 outcome.
func (r *Registrar) registerMetrics(reg prometheus.Registerer) {
	gauge := func(name, help string, v func(RegistrationHealth) float64) {
		registerCollector[prometheus.Collector](reg, r.log, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return v(r.Health()) }))
	}
	gauge(MetricRegistrationHealthy, "1 while the replica is registered and healthy with the primary, else 0.",
		func(h RegistrationHealth) float64 {
			if h.Unhealthy {
				return 0
			}
			return 1
		})
	gauge(MetricRegistrationFailures, "Failed registration attempts since the last success.",
		func(h RegistrationHealth) float64 { return float64(h.ConsecutiveFailures) })
	gauge(MetricRegistrationLastSuccess, "Unix time of the last successful registration (0: never).",
		func(h RegistrationHealth) float64 { return unixSeconds(h.LastSuccess) })
	gauge(MetricRegistrationSiblings, "Sibling replicas the primary listed at the last registration.",
		func(h RegistrationHealth) float64 { return float64(h.Siblings) })
}
