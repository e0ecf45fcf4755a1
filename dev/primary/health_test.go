package devprimary

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeProxy serves /healthz-report with whatever the test sets.
type fakeProxy struct {
	mu     sync.Mutex
	status int
	body   string
	hits   int
	srv    *httptest.Server
}

func newFakeProxy(t *testing.T) *fakeProxy {
	f := &fakeProxy{status: http.StatusOK, body: `{"errors":null,"warnings":["version mismatch"]}`}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.URL.Path != "/healthz-report" {
			http.NotFound(w, r)
			return
		}
		f.hits++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status)
		_, _ = fmt.Fprint(w, f.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeProxy) set(status int, body string) {
	f.mu.Lock()
	f.status, f.body = status, body
	f.mu.Unlock()
}

func (f *fakeProxy) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

func (h *harness) registerAt(accessURL string, derp bool) {
	h.t.Helper()
	wantStatus(h.t, h.proxy(http.MethodPost, "/api/v2/workspaceproxies/me/register", map[string]any{
		"access_url": accessURL, "derp_enabled": derp, "replica_id": uuid.New(),
	}), http.StatusCreated)
}

func TestHealthJudgements(t *testing.T) {
	h := newHarness(t, nil)
	fp := newFakeProxy(t)
	h.registerAt(fp.srv.URL+"/", true)
	ctx := context.Background()
	for _, tc := range []struct {
		name, body, status string
		code               int
		errors             int
	}{
		{"healthy with warnings", `{"errors":[],"warnings":["version mismatch"]}`, HealthHealthy, 200, 0},
		{"null arrays", `{"errors":null,"warnings":null}`, HealthHealthy, 200, 0},
		{"errors", `{"errors":["cannot reach primary"],"warnings":[]}`, HealthUnhealthy, 200, 1},
		{"not json", `OK`, HealthUnhealthy, 200, 1},
		{"shutting down", `"shutting down"`, HealthUnhealthy, 500, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp.set(tc.code, tc.body)
			h.s.CheckHealth(ctx)
			got := h.s.HealthReports()[proxyID]
			if got.Status != tc.status || len(got.Report.Errors) != tc.errors || !got.CheckedAt.Equal(h.clock.Now()) {
				t.Errorf("health %+v, want %s with %d errors", got, tc.status, tc.errors)
			}
		})
	}
	if h.s.HealthReports()[proxy2ID].Status != HealthUnregistered {
		t.Errorf("unregistered proxy: %+v", h.s.HealthReports()[proxy2ID])
	}
	fp.srv.Close()
	h.s.CheckHealth(ctx)
	if got := h.s.HealthReports()[proxyID]; got.Status != HealthUnreachable || len(got.Report.Errors) != 1 {
		t.Errorf("closed proxy: %+v", got)
	}
}

// TestHealthDrivesDERPMap: only healthy DERP-enabled proxies become DERP
// regions, with coderd's region code, node name and port.
func TestHealthDrivesDERPMap(t *testing.T) {
	h := newHarness(t, nil)
	fp := newFakeProxy(t)
	fp.set(200, `{"errors":["starting"]}`)
	h.registerAt(fp.srv.URL, true)
	h.s.CheckHealth(context.Background())
	if m := h.s.derpMap(); len(m.Regions) != 0 {
		t.Fatalf("region for an unhealthy proxy: %+v", m.Regions)
	}
	fp.set(200, `{}`)
	h.s.CheckHealth(context.Background())
	r := h.s.derpMap().Regions[10001]
	if r == nil {
		t.Fatal("no region 10001 for the healthy proxy")
	}
	port, _ := strconv.Atoi(fp.srv.URL[strings.LastIndexByte(fp.srv.URL, ':')+1:])
	n := r.Nodes[0]
	if r.RegionCode != "coder_frankfurt" || r.RegionName != "Frankfurt" || n.Name != "10001a" || n.HostName != "127.0.0.1" ||
		n.DERPPort != port || n.STUNPort != -1 || n.RegionID != 10001 {
		t.Errorf("region %+v node %+v", r, n)
	}
	fp.set(200, `{"errors":["down"]}`)
	h.s.CheckHealth(context.Background())
	if len(h.s.derpMap().Regions) != 0 {
		t.Error("unhealthy proxy still in the DERP map")
	}
	// Without DERP a healthy proxy is no region either.
	fp.set(200, `{}`)
	h.registerAt(fp.srv.URL, false)
	h.s.CheckHealth(context.Background())
	if len(h.s.derpMap().Regions) != 0 {
		t.Error("DERP-disabled proxy in the DERP map")
	}
}

// TestHealthPollerRunsAndStops: registering kicks an immediate check, the
// ticker keeps checking, and Close stops the poller (run with -race).
func TestHealthPollerRunsAndStops(t *testing.T) {
	fp := newFakeProxy(t)
	h := newHarness(t, func(o *Options) { o.HealthInterval = 20 * time.Millisecond })
	h.registerAt(fp.srv.URL, true)
	deadline := time.Now().Add(10 * time.Second)
	for fp.count() < 3 || h.s.HealthReports()[proxyID].Status != HealthHealthy {
		if time.Now().After(deadline) {
			t.Fatalf("poller: %d checks, health %+v", fp.count(), h.s.HealthReports()[proxyID])
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	n := fp.count()
	time.Sleep(100 * time.Millisecond)
	if fp.count() != n {
		t.Errorf("poller still running after Close: %d → %d checks", n, fp.count())
	}
}
