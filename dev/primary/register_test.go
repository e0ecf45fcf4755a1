package devprimary

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/wsedge/wsedge/coderhttp"
)

func TestRegisterResponse(t *testing.T) {
	h := newHarness(t, nil)
	replica := uuid.New()
	res := h.register(replica)
	wantStatus(t, res, http.StatusCreated)
	var raw map[string]json.RawMessage
	res.json(t, &raw)
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "derp_force_websockets,derp_map,derp_mesh_key,derp_region_id,sibling_replicas" {
		t.Fatalf("response fields %s", got)
	}
	if string(raw["derp_region_id"]) != "10001" {
		t.Errorf("derp_region_id %s, want 10001 (10000 + the proxy's serial 1)", raw["derp_region_id"])
	}
	if string(raw["sibling_replicas"]) != "[]" {
		t.Errorf("sibling_replicas %s, want []", raw["sibling_replicas"])
	}
	var mesh string
	_ = json.Unmarshal(raw["derp_mesh_key"], &mesh)
	if len(mesh) != 64 {
		t.Errorf("derp_mesh_key %q", mesh)
	}
	if !strings.Contains(string(raw["derp_map"]), `"Regions"`) {
		t.Errorf("derp_map %s", raw["derp_map"])
	}

	// The second proxy gets the next region; without DERP no mesh key.
	res = h.do(http.MethodPost, "/api/v2/workspaceproxies/me/register", map[string]any{
		"access_url": "http://127.0.0.1:9/", "replica_id": uuid.New(),
	}, proxyTokenHeader, h.s.ProxyTokenOf(proxy2ID))
	wantStatus(t, res, http.StatusCreated)
	var r2 struct {
		MeshKey  string `json:"derp_mesh_key"`
		RegionID int32  `json:"derp_region_id"`
	}
	res.json(t, &r2)
	if r2.MeshKey != "" || r2.RegionID != 10002 {
		t.Errorf("second proxy: %+v", r2)
	}
}

func TestRegisterSiblings(t *testing.T) {
	h := newHarness(t, nil)
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	wantStatus(t, h.register(a), http.StatusCreated)
	h.clock.Advance(time.Second)
	wantStatus(t, h.register(b), http.StatusCreated)
	// Another proxy's replica is never a sibling.
	wantStatus(t, h.do(http.MethodPost, "/api/v2/workspaceproxies/me/register", map[string]any{
		"access_url": "http://127.0.0.1:9", "replica_id": uuid.New(),
	}, proxyTokenHeader, h.s.ProxyTokenOf(proxy2ID)), http.StatusCreated)
	h.clock.Advance(time.Second)

	siblings := func(id uuid.UUID) []map[string]any {
		t.Helper()
		res := h.register(id)
		wantStatus(t, res, http.StatusCreated)
		var out struct {
			Siblings []map[string]any `json:"sibling_replicas"`
		}
		res.json(t, &out)
		return out.Siblings
	}
	got := siblings(c)
	if len(got) != 2 || got[0]["id"] != a.String() || got[1]["id"] != b.String() {
		t.Fatalf("siblings of c: %v", got)
	}
	for _, k := range []string{"id", "hostname", "created_at", "relay_address", "region_id", "error", "database_latency"} {
		if _, ok := got[0][k]; !ok {
			t.Errorf("replica lacks %q: %v", k, got[0])
		}
	}
	if got[0]["region_id"] != float64(10001) {
		t.Errorf("region_id %v", got[0]["region_id"])
	}

	// A deregistered replica drops out; so does one that stopped
	// re-registering.
	wantStatus(t, h.proxy(http.MethodPost, "/api/v2/workspaceproxies/me/deregister", map[string]any{"replica_id": a}), http.StatusNoContent)
	if got := siblings(c); len(got) != 1 || got[0]["id"] != b.String() {
		t.Fatalf("after deregister: %v", got)
	}
	h.clock.Advance(ReplicaFreshness + time.Second)
	if got := siblings(c); len(got) != 0 {
		t.Fatalf("after b went quiet: %v", got)
	}
	if reps := h.s.Replicas(); len(reps) != 4 || reps[0].ID != a || reps[0].StoppedAt.IsZero() {
		t.Fatalf("Replicas %+v", reps)
	}
}

func TestRegisterErrors(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/api/v2/workspaceproxies/me/register"
	good := func(edit func(map[string]any)) map[string]any {
		m := map[string]any{"access_url": proxyAccessURL, "wildcard_hostname": proxyWildcard, "derp_enabled": true, "replica_id": uuid.New()}
		edit(m)
		return m
	}
	for _, tc := range []struct {
		name            string
		body            any
		message, detail string
	}{
		{"bad json", "{", "Request body must be valid JSON.", "unexpected EOF"},
		{"bad scheme", good(func(m map[string]any) { m["access_url"] = "ftp://x" }), "URL is invalid.", "scheme must be http or https"},
		{"path", good(func(m map[string]any) { m["access_url"] = "https://x/sub" }), "URL is invalid.", "path must be empty or /"},
		{"empty url", good(func(m map[string]any) { m["access_url"] = "" }), "URL is invalid.", "scheme must be http or https"},
		{"nil replica", good(func(m map[string]any) { m["replica_id"] = uuid.Nil }), "Replica ID is invalid.", ""},
		{"derp only", good(func(m map[string]any) { m["derp_enabled"] = false; m["derp_only"] = true }), "DerpOnly cannot be true when DerpEnabled is false.", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantJSONError(t, h.proxy(http.MethodPost, path, tc.body), http.StatusBadRequest, tc.message, tc.detail)
		})
	}
	res := h.proxy(http.MethodPost, path, good(func(m map[string]any) { m["wildcard_hostname"] = "apps.example.com" }))
	wantStatus(t, res, http.StatusBadRequest)
	var e coderhttp.Response
	res.json(t, &e)
	if e.Message != "Wildcard URL is invalid." || e.Detail == "" {
		t.Errorf("wildcard error %+v", e)
	}
}

func TestDeregister(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/api/v2/workspaceproxies/me/deregister"
	replica := uuid.New()
	wantJSONError(t, h.proxy(http.MethodPost, path, map[string]any{"replica_id": replica}), http.StatusNotFound,
		"Resource not found or you do not have access to this resource", "")
	wantStatus(t, h.register(replica), http.StatusCreated)
	res := h.proxy(http.MethodPost, path, map[string]any{"replica_id": replica})
	wantStatus(t, res, http.StatusNoContent)
	if len(res.body) != 0 {
		t.Errorf("204 with body %q", res.body)
	}
	wantJSONError(t, h.proxy(http.MethodPost, path, map[string]any{"replica_id": replica}), http.StatusInternalServerError,
		"An internal server error occurred.", "replica "+replica.String()+" is already marked stopped")
	// A replica ID can never come back after deregistering.
	wantJSONError(t, h.register(replica), http.StatusInternalServerError,
		"An internal server error occurred.", "replica "+replica.String()+" is marked stopped")
	wantJSONError(t, h.proxy(http.MethodPost, path, "nope"), http.StatusBadRequest,
		"Request body must be valid JSON.", "invalid character 'o' in literal null (expecting 'u')")
}
