package derp

import (
	"expvar"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names of the DERP relay (wsedge_derp_*), read at scrape time from
// the upstream server's expvar statistics.
const (
	MetricConnections      = "wsedge_derp_connections"
	MetricHomeConnections  = "wsedge_derp_home_connections"
	MetricClients          = "wsedge_derp_clients"
	MetricAccepts          = "wsedge_derp_accepts_total"
	MetricBytes            = "wsedge_derp_bytes_total"
	MetricPackets          = "wsedge_derp_packets_total"
	MetricPacketsForwarded = "wsedge_derp_packets_forwarded_total"
	MetricMeshPeers        = "wsedge_derp_mesh_peers"
)

// upstreamStat maps one upstream expvar to one series.
type upstreamStat struct {
	expvar string
	desc   *prometheus.Desc
	kind   prometheus.ValueType
	labels []string
}

var (
	descConnections     = prometheus.NewDesc(MetricConnections, "Open DERP client connections (plain and websocket), mesh connections included.", nil, nil)
	descHomeConnections = prometheus.NewDesc(MetricHomeConnections, "Open DERP connections of clients that use this relay as their home.", nil, nil)
	descClients         = prometheus.NewDesc(MetricClients, "Distinct DERP client keys known, by location (local: connected here; remote: at a meshed sibling).", []string{"location"}, nil)
	descAccepts         = prometheus.NewDesc(MetricAccepts, "DERP connections accepted.", nil, nil)
	descBytes           = prometheus.NewDesc(MetricBytes, "DERP payload bytes, by direction (received, sent).", []string{"direction"}, nil)
	descPackets         = prometheus.NewDesc(MetricPackets, "DERP packets, by direction (received, sent).", []string{"direction"}, nil)
	descForwarded       = prometheus.NewDesc(MetricPacketsForwarded, "DERP packets forwarded over the mesh, by direction (in: from a sibling; out: to a sibling).", []string{"direction"}, nil)
	descMeshPeers       = prometheus.NewDesc(MetricMeshPeers, "Sibling replicas this relay meshes with.", nil, nil)
)

var upstreamStats = []upstreamStat{
	{"gauge_current_connections", descConnections, prometheus.GaugeValue, nil},
	{"gauge_current_home_connections", descHomeConnections, prometheus.GaugeValue, nil},
	{"gauge_clients_local", descClients, prometheus.GaugeValue, []string{"local"}},
	{"gauge_clients_remote", descClients, prometheus.GaugeValue, []string{"remote"}},
	{"accepts", descAccepts, prometheus.CounterValue, nil},
	{"bytes_received", descBytes, prometheus.CounterValue, []string{"received"}},
	{"bytes_sent", descBytes, prometheus.CounterValue, []string{"sent"}},
	{"packets_received", descPackets, prometheus.CounterValue, []string{"received"}},
	{"packets_sent", descPackets, prometheus.CounterValue, []string{"sent"}},
	{"packets_forwarded_in", descForwarded, prometheus.CounterValue, []string{"in"}},
	{"packets_forwarded_out", descForwarded, prometheus.CounterValue, []string{"out"}},
}

// collector reports the relay's statistics.
type collector struct {
	s    *Server
	vars interface{ Get(string) expvar.Var }
}

// Collector reports the relay's connections, clients, traffic and mesh
// peers; register it with the dialer's Registerer.
func (s *Server) Collector() prometheus.Collector {
	c := collector{s: s}
	c.vars, _ = s.srv.ExpVar(false).(interface{ Get(string) expvar.Var })
	return c
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	seen := map[*prometheus.Desc]bool{}
	for _, st := range upstreamStats {
		if !seen[st.desc] {
			seen[st.desc] = true
			ch <- st.desc
		}
	}
	ch <- descMeshPeers
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	if c.vars != nil {
		for _, st := range upstreamStats {
			v := c.vars.Get(st.expvar)
			if v == nil {
				continue
			}
			f, err := strconv.ParseFloat(v.String(), 64)
			if err != nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(st.desc, st.kind, f, st.labels...)
		}
	}
	ch <- prometheus.MustNewConstMetric(descMeshPeers, prometheus.GaugeValue, float64(len(c.s.MeshPeers())))
}
