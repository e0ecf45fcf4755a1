package dialer

import (
	"bufio"
	"context"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dialer's Prometheus series. Labels are bounded: route
// kinds, status codes and outcomes, never users or URLs.
type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	dialDuration    *prometheus.HistogramVec
	websockets      *prometheus.GaugeVec
	tokenRefused    *prometheus.CounterVec
	fastPath        *prometheus.CounterVec
	heartbeatClosed prometheus.Counter
	statsFlushes    *prometheus.CounterVec
	statsBacklog    prometheus.Gauge
	shed            *prometheus.CounterVec

	// Children of the vectors every request touches, memoised.
	requestsBy seriesCache[routeCode, prometheus.Counter]
	durationBy seriesCache[string, prometheus.Observer]
	fastPathBy seriesCache[string, prometheus.Counter]
}

// routeCode keys wsedge_dialer_requests_total.
type routeCode struct {
	route string
	code  int
}

// Native-histogram resolution of the dialer's latency histograms, kept
// alongside their classic buckets for servers without native-histogram
// support: buckets 10% wide, at most 160, reset at most hourly.
const (
	nativeBucketFactor = 1.1
	nativeMaxBuckets   = 160
)

func newMetrics(regs ...prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsedge_dialer_requests_total",
			Help: "Requests served by the dialer, by route kind and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsedge_dialer_request_duration_seconds",
			Help:    "Time to serve a request (websockets and terminals: until the switch, not the session), by route kind.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),

			NativeHistogramBucketFactor:     nativeBucketFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"route"}),
		dialDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsedge_dialer_agent_dial_duration_seconds",
			Help:    "Time to open a connection to an agent port, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 10),

			NativeHistogramBucketFactor:     nativeBucketFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"outcome"}),
		websockets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wsedge_dialer_websockets_active",
			Help: "Open proxied websockets, by kind (app, terminal).",
		}, []string{"kind"}),
		tokenRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsedge_dialer_app_token_refused_total",
			Help: "Requests refused because their app token was missing, invalid, expired or for another request.",
		}, []string{"reason"}),
		fastPath: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsedge_dialer_fast_path_total",
			Help: "App requests that came by Envoy's fast path (no ext_authz call), by result: served, or sent back to ext_authz because the token cookie was expired, invalid (withdrawn key included), for another request, one of several, or the query carried a key or token.",
		}, []string{"result"}),
		heartbeatClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsedge_dialer_terminal_heartbeat_closed_total",
			Help: "Terminals closed because the client stopped answering pings.",
		}),
		statsFlushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsedge_dialer_stats_flushes_total",
			Help: "App stats uploads to the primary, by outcome.",
		}, []string{"outcome"}),
		statsBacklog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsedge_dialer_stats_backlog_reports",
			Help: "App stats reports kept after failed uploads.",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsedge_dialer_shed_total",
			Help: "Requests answered 503 because a limit was reached, by limit (requests, agent_requests, dials).",
		}, []string{"limit"}),
	}
	m.requestsBy.child = func(k routeCode) prometheus.Counter {
		return m.requests.WithLabelValues(k.route, strconv.Itoa(k.code))
	}
	m.durationBy.child = func(route string) prometheus.Observer { return m.duration.WithLabelValues(route) }
	m.fastPathBy.child = func(result string) prometheus.Counter { return m.fastPath.WithLabelValues(result) }
	cs := []prometheus.Collector{m.shed, m.requests, m.duration, m.dialDuration, m.websockets, m.tokenRefused, m.fastPath, m.heartbeatClosed, m.statsFlushes, m.statsBacklog}
	for _, reg := range regs {
		if reg == nil {
			continue
		}
		for _, c := range cs {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// seriesCache memoises the children of a metric vector by a key of
// bounded cardinality: WithLabelValues hashes and validates its label
// values on every call, a map lookup does not. The map is copied on
// write, so lookups take no lock. A child is created on first use, as
// WithLabelValues would create it, so no series appears before then.
type seriesCache[K comparable, M any] struct {
	child func(K) M

	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[K]M]
}

func (c *seriesCache[K, M]) get(k K) M {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	next := make(map[K]M)
	if old != nil {
		maps.Copy(next, *old)
	}
	v := c.child(k)
	next[k] = v
	c.m.Store(&next)
	return v
}

func (m *metrics) observeFlush(outcome string, _ int, backlog int) {
	m.statsFlushes.WithLabelValues(outcome).Inc()
	m.statsBacklog.Set(float64(backlog))
}

// registerInFlight exposes how much of Limits is in use.
func registerInFlight(regs []prometheus.Registerer, a *admission, d limitedDialer) error {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsedge_dialer_requests_in_flight",
			Help: "App and terminal requests waiting for their agent's answer (bounded by --max-requests).",
		}, a.inFlight),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsedge_dialer_agent_dials_in_flight",
			Help: "Tailnet dials to agents in flight (bounded by --max-dials).",
		}, func() float64 { return float64(len(d.slots)) }),
	}
	for _, reg := range regs {
		if reg == nil {
			continue
		}
		for _, c := range cs {
			if err := reg.Register(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// requestState is what the dialer keeps about one request, in one
// allocation carried by its context: the route label for its metrics,
// Envoy's request ID for its log lines, the status it was answered with.
type requestState struct {
	label string
	id    string
	rec   statusRecorder
	// app is set for an app request about to be proxied.
	app *appExchange
}

type requestStateKey struct{}

// stateOf is the state instrument keeps for the request ctx belongs to;
// nil outside instrument.
func stateOf(ctx context.Context) *requestState {
	st, _ := ctx.Value(requestStateKey{}).(*requestState)
	return st
}

// setRouteLabel names the route kind for the request's metrics.
func setRouteLabel(r *http.Request, label string) {
	if st := stateOf(r.Context()); st != nil {
		st.label = label
	}
}

// instrument records request counts and durations.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		st := &requestState{label: "unknown", id: headerRequestID(r)}
		st.rec.ResponseWriter = w
		r = r.WithContext(context.WithValue(r.Context(), requestStateKey{}, st))
		next.ServeHTTP(&st.rec, r)
		code := st.rec.status
		if code == 0 {
			code = http.StatusOK
		}
		took := time.Since(start)
		s.metrics.requestsBy.get(routeCode{st.label, code}).Inc()
		s.metrics.durationBy.get(st.label).Observe(took.Seconds())
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("dialer: request", "request_id", st.id, "route", st.label, "method", r.Method, "status", code, "took", took)
		}
	})
}

// statusRecorder remembers the status code and keeps the writer's
// flushing and hijacking (websockets) working.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return c, rw, err
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
