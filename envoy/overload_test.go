package envoy

import (
	"strings"
	"testing"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	downstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	"github.com/wsedge/wsedge/edgewire"
)

func TestOverloadManagerWatchesHeapAndConnections(t *testing.T) {
	c := DefaultConfig()
	c.Limits = Limits{MaxHeapBytes: 512 << 20, MaxDownstreamConnections: 300}
	b, err := Bootstrap(c)
	if err != nil {
		t.Fatal(err)
	}
	om := b.GetOverloadManager()
	var heap fixedheapv3.FixedHeapConfig
	var conns downstreamv3.DownstreamConnectionsConfig
	for _, m := range om.GetResourceMonitors() {
		switch m.GetName() {
		case fixedHeapMonitor:
			if err := m.GetTypedConfig().UnmarshalTo(&heap); err != nil {
				t.Fatal(err)
			}
		case downstreamConnsMonitor:
			if err := m.GetTypedConfig().UnmarshalTo(&conns); err != nil {
				t.Fatal(err)
			}
		}
	}
	if heap.GetMaxHeapSizeBytes() != 512<<20 || conns.GetMaxActiveDownstreamConnections() != 300 {
		t.Fatalf("monitors: heap %d, connections %d", heap.GetMaxHeapSizeBytes(), conns.GetMaxActiveDownstreamConnections())
	}
	actions := map[string]float64{}
	for _, a := range om.GetActions() {
		actions[a.GetName()] = a.GetTriggers()[0].GetThreshold().GetValue()
	}
	if actions[stopAcceptingRequests] == 0 || actions[shrinkHeapAction] == 0 || actions[shrinkHeapAction] >= actions[stopAcceptingRequests] {
		t.Fatalf("actions %v: want shrink_heap before stop_accepting_requests", actions)
	}
}

func TestCircuitBreakersOnBothClusters(t *testing.T) {
	c := DefaultConfig()
	c.Limits = Limits{AuthzMaxRequests: 7, DialerMaxRequests: 11, DialerMaxPendingRequests: 3}
	b, err := Bootstrap(c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][3]uint32{AuthzCluster: {7, 7, 7}, DialerCluster: {11, 11, 3}}
	for _, cl := range b.GetStaticResources().GetClusters() {
		if _, ok := want[cl.GetName()]; !ok {
			continue // the JWKS fetch (one request per refresh) needs none
		}
		th := cl.GetCircuitBreakers().GetThresholds()
		if len(th) != 1 {
			t.Fatalf("%s: thresholds %v", cl.GetName(), th)
		}
		got := [3]uint32{th[0].GetMaxConnections().GetValue(), th[0].GetMaxRequests().GetValue(), th[0].GetMaxPendingRequests().GetValue()}
		if got != want[cl.GetName()] {
			t.Errorf("%s: connections/requests/pending %v, want %v", cl.GetName(), got, want[cl.GetName()])
		}
		delete(want, cl.GetName())
	}
	if len(want) != 0 {
		t.Errorf("clusters without circuit breakers: %v", want)
	}
	// Zero limits take the defaults, never "unlimited" or "none".
	if th := authzCircuitBreakers(Config{}).GetThresholds()[0]; th.GetMaxRequests().GetValue() != DefaultAuthzMaxRequests {
		t.Errorf("zero AuthzMaxRequests gave %d", th.GetMaxRequests().GetValue())
	}
}

func TestEnvoys503sCarryRetryAfter(t *testing.T) {
	mappers := hcmOf(t, DefaultConfig()).GetLocalReplyConfig().GetMappers()
	if len(mappers) != 1 {
		t.Fatalf("mappers %v", mappers)
	}
	h := mappers[0].GetHeadersToAdd()
	if len(h) != 1 || !strings.EqualFold(h[0].GetHeader().GetKey(), "retry-after") || h[0].GetHeader().GetValue() != "1" {
		t.Fatalf("headers %v", h)
	}
}

func TestAuthzLatencyInTheAccessLog(t *testing.T) {
	var az extauthzv3.ExtAuthz
	if err := filterByName(t, hcmOf(t, DefaultConfig()), edgewire.ExtAuthzFilter).GetTypedConfig().UnmarshalTo(&az); err != nil {
		t.Fatal(err)
	}
	if !az.GetEmitFilterStateStats() {
		t.Error("ext_authz does not emit filter state stats")
	}
	if got := accessLogFields["authz_check_us"]; got != "%FILTER_STATE(envoy.filters.http.ext_authz:FIELD:latency_us)%" {
		t.Errorf("authz_check_us = %v", got)
	}
}
