package envoy

import (
	"slices"
	"testing"
	"time"

	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/wsedge/wsedge/edgewire"
)

func extProcOf(t *testing.T, m *hcmv3.HttpConnectionManager, name string) (*hcmv3.HttpFilter, *extprocv3.ExternalProcessor) {
	t.Helper()
	f := filterByName(t, m, name)
	cfg := f.GetTypedConfig()
	var wrapped matchingv3.ExtensionWithMatcher
	if cfg.MessageIs(&wrapped) { // the fast path's Origin matcher
		if err := cfg.UnmarshalTo(&wrapped); err != nil {
			t.Fatal(err)
		}
		cfg = wrapped.GetExtensionConfig().GetTypedConfig()
	}
	var ep extprocv3.ExternalProcessor
	if err := cfg.UnmarshalTo(&ep); err != nil {
		t.Fatal(err)
	}
	return f, &ep
}

func modeOf(pm *extprocv3.ProcessingMode) (request, response bool) {
	if pm.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE ||
		pm.GetRequestTrailerMode() != extprocv3.ProcessingMode_SKIP || pm.GetResponseTrailerMode() != extprocv3.ProcessingMode_SKIP {
		panic("bodies or trailers sent: " + pm.String())
	}
	return pm.GetRequestHeaderMode() == extprocv3.ProcessingMode_SEND, pm.GetResponseHeaderMode() == extprocv3.ProcessingMode_SEND
}

// TestExtProcFilters checks both ext_proc filters fail closed, bound each
// message by -ext-proc-timeout, process headers only, start disabled and
// talk to the authz cluster; the app-policy one gets authz's metadata and
// the preflight one marks its streams.
func TestExtProcFilters(t *testing.T) {
	c := DefaultConfig()
	c.ExtProcTimeout = 750 * time.Millisecond
	m := hcmOf(t, c)
	for _, tt := range []struct {
		name              string
		wantReq, wantResp bool
		wantMetadata      []string
		wantPhaseMetadata bool
	}{
		{ExtProcFilter, false, true, []string{edgewire.ExtAuthzFilter, edgewire.JWTAuthnFilter}, false},
		{ExtProcPreflightFilter, true, false, nil, true},
	} {
		f, ep := extProcOf(t, m, tt.name)
		if !f.GetDisabled() {
			t.Errorf("%s enabled by default; app routes must opt in", tt.name)
		}
		if ep.GetFailureModeAllow() {
			t.Errorf("%s fails open", tt.name)
		}
		if ep.GetStatusOnError().GetCode() != typev3.StatusCode_ServiceUnavailable {
			t.Errorf("%s status on error %v, want 503", tt.name, ep.GetStatusOnError())
		}
		if got := ep.GetMessageTimeout().AsDuration(); got != c.ExtProcTimeout {
			t.Errorf("%s message timeout %s, want %s", tt.name, got, c.ExtProcTimeout)
		}
		if ep.GetGrpcService().GetEnvoyGrpc().GetClusterName() != AuthzCluster {
			t.Errorf("%s cluster %v", tt.name, ep.GetGrpcService())
		}
		if req, resp := modeOf(ep.GetProcessingMode()); req != tt.wantReq || resp != tt.wantResp {
			t.Errorf("%s mode request %v response %v", tt.name, req, resp)
		}
		if got := ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(); !slices.Equal(got, tt.wantMetadata) {
			t.Errorf("%s forwards metadata %v, want %v", tt.name, got, tt.wantMetadata)
		}
		md := ep.GetGrpcService().GetInitialMetadata()
		hasPhase := len(md) == 1 && md[0].GetKey() == edgewire.ExtProcPhaseKey && md[0].GetValue() == edgewire.ExtProcPhaseBeforeAuthz
		if hasPhase != tt.wantPhaseMetadata {
			t.Errorf("%s initial metadata %v", tt.name, md)
		}
		wantAttrs := []string(nil)
		if tt.name == ExtProcFilter {
			wantAttrs = []string{edgewire.CodeDetailsAttribute, edgewire.HostAttribute, edgewire.MethodAttribute, edgewire.OriginAttribute}
		}
		if got := ep.GetResponseAttributes(); !slices.Equal(got, wantAttrs) {
			t.Errorf("%s response attributes %v, want %v", tt.name, got, wantAttrs)
		}
		if ep.GetMetadataOptions().GetReceivingNamespaces() != nil || len(ep.GetRequestAttributes()) > 0 {
			t.Errorf("%s accepts metadata or asks request attributes", tt.name)
		}
		if ep.GetAllowModeOverride() || ep.GetObservabilityMode() {
			t.Errorf("%s lets the server change its mode or only observes", tt.name)
		}
	}
}

// TestExtProcRoutes checks which routes turn the filters on, and with
// which headers.
func TestExtProcRoutes(t *testing.T) {
	m := hcmOf(t, DefaultConfig())
	type on struct{ req, resp bool }
	got := map[string]map[string]on{} // filter → vhost/route → mode
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			for _, name := range []string{ExtProcFilter, ExtProcPreflightFilter} {
				a, ok := r.GetTypedPerFilterConfig()[name]
				if !ok {
					continue
				}
				var per extprocv3.ExtProcPerRoute
				if err := a.UnmarshalTo(&per); err != nil {
					t.Fatal(err)
				}
				if per.GetDisabled() {
					continue
				}
				req, resp := modeOf(per.GetOverrides().GetProcessingMode())
				if got[name] == nil {
					got[name] = map[string]on{}
				}
				got[name][vh.GetName()+"/"+r.GetName()] = on{req, resp}
			}
		}
	}
	want := map[string]map[string]on{
		ExtProcFilter: {
			"access/path-app":              {false, true},
			"access/path-app-encoded":      {false, true},
			"apps/subdomain-app-preflight": {true, true},
			"apps/subdomain-app":           {false, true},
		},
		ExtProcPreflightFilter: {
			"apps/subdomain-app-preflight": {true, false},
		},
	}
	for name, routes := range want {
		if len(got[name]) != len(routes) {
			t.Errorf("%s on %v, want %v", name, got[name], routes)
		}
		for r, mode := range routes {
			if got[name][r] != mode {
				t.Errorf("%s on %s = %+v, want %+v", name, r, got[name][r], mode)
			}
		}
	}

	// The preflight route matches only OPTIONS with both CORS headers, and
	// ext_authz stays on for it.
	var apps []string
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		if vh.GetName() != "apps" {
			continue
		}
		for _, r := range vh.GetRoutes() {
			apps = append(apps, r.GetName())
			if r.GetName() != "subdomain-app-preflight" {
				continue
			}
			var hs []string
			for _, h := range r.GetMatch().GetHeaders() {
				v := h.GetStringMatch().GetExact()
				if h.GetPresentMatch() {
					v = "present"
				}
				hs = append(hs, h.GetName()+"="+v)
			}
			if want := []string{":method=OPTIONS", "origin=present", "access-control-request-method=present"}; !slices.Equal(hs, want) {
				t.Errorf("preflight match %v, want %v", hs, want)
			}
			if _, off := r.GetTypedPerFilterConfig()[edgewire.ExtAuthzFilter]; off {
				t.Error("preflight route changes ext_authz")
			}
		}
	}
	if want := []string{"latency-check", "subdomain-app-warm", "subdomain-app-warm-same-origin", "subdomain-app-warm-websocket", "subdomain-app-preflight", "subdomain-app"}; !slices.Equal(apps, want) {
		t.Errorf("app host routes %v, want %v", apps, want)
	}
}

func TestNoWildcardNoPreflightFilter(t *testing.T) {
	c := DefaultConfig()
	c.WildcardHostname = ""
	for _, f := range hcmOf(t, c).GetHttpFilters() {
		if f.GetName() == ExtProcPreflightFilter {
			t.Fatal("preflight filter without subdomain apps")
		}
	}
}
