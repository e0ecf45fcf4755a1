// Package grafana holds wsedge's Grafana dashboard (wsedge-dashboard.json):
// the Envoy edge from Envoy's own /stats/prometheus, and authz, ext_proc,
// the dialer, tailnet coordination, DERP and the primary client from the
// wsedge_* series of `wsedge authz` and `wsedge dialer`. Its test checks
// that the JSON is well formed and that every series it queries exists.
package grafana
