package coordinate

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names of the coordination client (wsedge_coordinate_*), read from
// Stats at scrape time.
const (
	MetricConnected   = "wsedge_coordinate_connected"
	MetricTunnels     = "wsedge_coordinate_tunnels"
	MetricConnections = "wsedge_coordinate_tunnel_connections"
	MetricSessions    = "wsedge_coordinate_sessions_total"
	MetricDERPMaps    = "wsedge_coordinate_derp_maps_total"
	MetricSweeps      = "wsedge_coordinate_idle_sweeps_total"
)

var (
	descConnected   = prometheus.NewDesc(MetricConnected, "1 while the coordination stream with the primary is up, else 0.", nil, nil)
	descTunnels     = prometheus.NewDesc(MetricTunnels, "Agents this proxy has a tunnel to, by state (ready: the agent is ready for the handshake; pending: not yet).", []string{"state"}, nil)
	descConnections = prometheus.NewDesc(MetricConnections, "Open connections holding a tunnel (idle tunnels are removed after the idle timeout).", nil, nil)
	descSessions    = prometheus.NewDesc(MetricSessions, "Coordination streams established with the primary (reconnects add one).", nil, nil)
	descDERPMaps    = prometheus.NewDesc(MetricDERPMaps, "DERP maps received from the primary.", nil, nil)
	descSweeps      = prometheus.NewDesc(MetricSweeps, "Idle-tunnel sweeps done.", nil, nil)
)

// collector reports a Client's Stats.
type collector struct{ cl *Client }

// Collector reports the client's tunnels and coordination state; register
// it with the process's Registerer.
func (cl *Client) Collector() prometheus.Collector { return collector{cl} }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descTunnels, descConnections, descSessions, descDERPMaps, descSweeps} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.cl.Stats()
	connected := 0.0
	if s.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(descTunnels, prometheus.GaugeValue, float64(s.ReadyTunnels), "ready")
	ch <- prometheus.MustNewConstMetric(descTunnels, prometheus.GaugeValue, float64(s.Tunnels-s.ReadyTunnels), "pending")
	ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(s.OpenConnections))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.CounterValue, float64(s.Sessions))
	ch <- prometheus.MustNewConstMetric(descDERPMaps, prometheus.CounterValue, float64(s.DERPMaps))
	ch <- prometheus.MustNewConstMetric(descSweeps, prometheus.CounterValue, float64(s.Sweeps))
}
