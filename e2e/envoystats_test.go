package e2e

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/devstack"
)

// TestUpstreamStats: by default Envoy counts the requests it sends to the
// dialer as the edge's own (http.edge.downstream_rq_2xx) and in the
// dialer cluster's total, but charges no per-status, completion or
// latency copies to the cluster (the router's dynamic stats; Envoy keeps
// a cluster.dialer.upstream_rq_completed of 0); the calls to authz made
// along the way are charged either way. With --upstream-stats the
// dialer cluster has them too.
func TestUpstreamStats(t *testing.T) {
	const warm = 5
	for _, on := range []bool{false, true} {
		t.Run("upstream-stats="+strconv.FormatBool(on), func(t *testing.T) {
			h := startEdge(t, WithDev(func(c *devstack.DevConfig) {
				c.Envoy = func(e *envoy.Config) { e.UpstreamStats = on }
			}), WithWarmCookies())
			c := h.plainClient(t)
			for range warm {
				if a := fetch(c, "http://"+echoHost+"/", http.Header{"Cookie": {h.echoCookie}}); a.status != http.StatusOK {
					t.Fatalf("warm request: %s", a)
				}
			}
			stats, err := h.envoyAdmin("/stats")
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if t.Failed() {
					t.Log(regexp.MustCompile(`(?m)^cluster\.(dialer|authz)\..*upstream_rq_.*$`).FindAllString(stats, -1))
				}
			}()
			// The warm cookie's hand-off is one more request to the dialer.
			for _, name := range []string{"http.edge.downstream_rq_2xx", "cluster.dialer.upstream_rq_total"} {
				if n := envoyStat(stats, name); n < warm+1 {
					t.Errorf("%s = %d, want at least %d", name, n, warm+1)
				}
			}
			if n := envoyStat(stats, "cluster.authz.internal.upstream_rq_completed"); n < 1 {
				t.Errorf("cluster.authz.internal.upstream_rq_completed = %d: the hand-off's Check is not charged to the authz cluster", n)
			}
			for _, name := range []string{"cluster.dialer.upstream_rq_2xx", "cluster.dialer.upstream_rq_completed", "cluster.dialer.external.upstream_rq_2xx"} {
				n := envoyStat(stats, name)
				switch {
				case on && n < warm+1:
					t.Errorf("with upstream stats, %s = %d, want at least %d", name, n, warm+1)
				case !on && n > 0:
					t.Errorf("without upstream stats, Envoy counted %s = %d", name, n)
				}
			}
			// Histograms read "No recorded values" until Envoy's first stats flush.
			if has := regexp.MustCompile(`(?m)^cluster\.dialer\.upstream_rq_time: `).MatchString(stats); has != on {
				t.Errorf("Envoy has the cluster.dialer.upstream_rq_time histogram: %v, want %v", has, on)
			}
		})
	}
}

// envoyStat is a counter's value in Envoy's admin /stats text, or -1 if
// Envoy has no such stat.
func envoyStat(stats, name string) int {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `: (\d+)$`).FindStringSubmatch(stats)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
