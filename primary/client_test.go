package primary

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestNewOptions(t *testing.T) {
	u, _ := url.Parse("https://coder.example.com")
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"ok", Options{URL: u, ProxyToken: "x:y"}, true},
		{"no URL", Options{ProxyToken: "x:y"}, false},
		{"ftp", Options{URL: &url.URL{Scheme: "ftp", Host: "h"}, ProxyToken: "x:y"}, false},
		{"no host", Options{URL: &url.URL{Scheme: "https"}, ProxyToken: "x:y"}, false},
		{"no token", Options{URL: u}, false},
		{"token with newline", Options{URL: u, ProxyToken: "x:y\r\nX-Evil: 1"}, false},
		{"negative timeout", Options{URL: u, ProxyToken: "x:y", Timeout: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (c.timeout != DefaultTimeout || c.maxBody != DefaultMaxBodyBytes) {
				t.Errorf("defaults: timeout %v, max body %d", c.timeout, c.maxBody)
			}
		})
	}
}

func TestBuildInfo(t *testing.T) {
	f, srv := newFakeCoderd(t)
	c := f.client(t, srv)
	bi, err := c.BuildInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if bi.Version != "v2.99.1+abc" || bi.WorkspaceProxy || bi.DashboardURL != "https://coder.example.com" {
		t.Errorf("build info = %+v", bi)
	}
	if r := f.last(); r.Method != "GET" || r.Path != "/api/v2/buildinfo" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
}

func TestProxyTokenSentAndRefused(t *testing.T) {
	f, srv := newFakeCoderd(t)
	ctx := context.Background()
	c := f.client(t, srv)
	if _, err := c.CryptoKeys(ctx, tokens.FeatureAppToken); err != nil {
		t.Fatal(err)
	}
	if got := f.last().Header.Get("Coder-External-Proxy-Token"); got != f.token() {
		t.Errorf("proxy token header = %q, want %q", got, f.token())
	}
	tests := []struct {
		name, token, message, detail string
	}{
		{"wrong secret", f.proxyID.String() + ":" + strings.Repeat("0", 64), "Invalid external proxy token", "Invalid proxy token secret."},
		{"unknown proxy", uuid.New().String() + ":" + f.secret, "Invalid external proxy token", "Proxy not found."},
		{"not two parts", "garbage", "Invalid external proxy token", "Invalid token format."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.client(t, srv, func(o *Options) { o.ProxyToken = tt.token })
			_, err := c.Register(ctx, RegisterRequest{ReplicaID: uuid.New(), AccessURL: "https://proxy.example.com"})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.StatusCode != 401 || e.Message != tt.message || e.Detail != tt.detail {
				t.Errorf("error = %d %q %q, want 401 %q %q", e.StatusCode, e.Message, e.Detail, tt.message, tt.detail)
			}
			if !IsStatus(err, http.StatusUnauthorized) || errors.Is(err, ErrInvalidResponse) || errors.Is(err, ErrUnavailable) {
				t.Errorf("classification of %v", err)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Errorf("error text leaks the token: %v", err)
			}
		})
	}
}

func TestBuildInfoIsUnauthenticated(t *testing.T) {
	f, srv := newFakeCoderd(t)
	c := f.client(t, srv)
	if _, err := c.BuildInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := f.last().Header.Get(ProxyTokenHeader); h != "" {
		t.Errorf("buildinfo sent the proxy token %q", h)
	}
}

func TestRegisterAndDeregister(t *testing.T) {
	f, srv := newFakeCoderd(t)
	sibling := Replica{ID: uuid.New(), Hostname: "b", CreatedAt: t0, RelayAddress: "https://10.0.0.6:443", RegionID: 10001, DatabaseLatency: 120}
	f.regResponse = func(RegisterRequest) RegisterResponse {
		return RegisterResponse{DERPMeshKey: "mk", DERPRegionID: 10001, DERPForceWebSockets: true, SiblingReplicas: []Replica{sibling}}
	}
	c := f.client(t, srv)
	ctx := context.Background()
	req := RegisterRequest{
		AccessURL: "https://proxy.example.com", WildcardHostname: "*.apps.example.com", DerpEnabled: true,
		ReplicaID: uuid.MustParse("bbbbbbbb-0000-4000-8000-000000000002"), Hostname: "host-a",
		ReplicaRelayAddress: "https://10.0.0.5:443", Version: "v2.99.1",
	}
	res, err := c.Register(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.DERPMeshKey != "mk" || res.DERPRegionID != 10001 || !res.DERPForceWebSockets || len(res.SiblingReplicas) != 1 || !reflect.DeepEqual(res.SiblingReplicas[0], sibling) {
		t.Errorf("response = %+v", res)
	}
	// Exact wire names of the request.
	var wire map[string]any
	if err := json.Unmarshal(f.last().Body, &wire); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"access_url": "https://proxy.example.com", "wildcard_hostname": "*.apps.example.com", "derp_enabled": true,
		"derp_only": false, "replica_id": "bbbbbbbb-0000-4000-8000-000000000002", "hostname": "host-a",
		"replica_error": "", "replica_relay_address": "https://10.0.0.5:443", "version": "v2.99.1",
	}
	if !reflect.DeepEqual(wire, want) {
		t.Errorf("register body = %v\nwant %v", wire, want)
	}
	if ct := f.last().Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}

	if err := c.Deregister(ctx, req.ReplicaID); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	if string(f.last().Body) != `{"replica_id":"bbbbbbbb-0000-4000-8000-000000000002"}`+"\n" {
		t.Errorf("deregister body %q", f.last().Body)
	}
	// A deregistered replica ID can never register again.
	_, err = c.Register(ctx, req)
	if !IsStatus(err, 500) || !strings.Contains(err.Error(), "marked stopped") {
		t.Errorf("re-register after deregister: %v", err)
	}
	// Deregistering twice is a 500, an unknown replica a 404.
	if err := c.Deregister(ctx, req.ReplicaID); !IsStatus(err, 500) {
		t.Errorf("second deregister: %v", err)
	}
	if err := c.Deregister(ctx, uuid.New()); !IsStatus(err, 404) {
		t.Errorf("unknown replica: %v", err)
	}
	// The primary validates the request; its 400 comes back typed.
	var e *Error
	if _, err := c.Register(ctx, RegisterRequest{}); !errors.As(err, &e) || e.StatusCode != 400 || e.Message != "Replica ID is invalid." {
		t.Errorf("nil replica ID: %v", err)
	}
}

func TestRegisterResponseDERPMap(t *testing.T) {
	// tailcfg.DERPMap uses Go field names as JSON keys; a response in that
	// form must decode into the map. Coder's fork adds EmbeddedRelay,
	// which upstream tailcfg does not have: it is ignored, not an error.
	body := `{"derp_mesh_key":"k","derp_region_id":10001,"derp_map":{"Regions":{"1":{"RegionID":1,"RegionCode":"coder","RegionName":"Coder","EmbeddedRelay":true,"Nodes":[{"Name":"1a","RegionID":1,"HostName":"coder.example.com","DERPPort":443,"STUNPort":-1,"ForceHTTP":false}]}}},"derp_force_websockets":false,"sibling_replicas":[]}`
	srv := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		_, _ = w.Write([]byte(body))
	})
	c := rawClient(t, srv.URL, Options{})
	res, err := c.Register(context.Background(), RegisterRequest{ReplicaID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	reg := res.DERPMap.Regions[1]
	if reg == nil || reg.RegionCode != "coder" || len(reg.Nodes) != 1 || reg.Nodes[0].HostName != "coder.example.com" || reg.Nodes[0].STUNPort != -1 {
		t.Errorf("derp map = %+v", res.DERPMap)
	}
}

func TestCryptoKeys(t *testing.T) {
	f, srv := newFakeCoderd(t)
	k2 := testKey(t, tokens.FeatureAppToken, 2, t0, time.Time{})
	k1 := testKey(t, tokens.FeatureAppToken, 1, t0.Add(-30*24*time.Hour), t0.Add(time.Hour))
	f.keys[tokens.FeatureAppToken] = []CryptoKey{wireKey(k2), wireKey(k1)}
	c := f.client(t, srv)
	ctx := context.Background()
	keys, err := c.CryptoKeys(ctx, tokens.FeatureAppToken)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !reflect.DeepEqual(keys[0], k2) || !keys[1].DeletesAt.Equal(k1.DeletesAt) || string(keys[1].Secret) != string(k1.Secret) {
		t.Errorf("keys = %+v", keys)
	}
	if r := f.last(); r.Method != "GET" || r.Query != "feature=workspace_apps_token" {
		t.Errorf("request %s ?%s", r.Method, r.Query)
	}
	// The primary's feature errors come back typed.
	tests := []struct {
		feature tokens.Feature
		message string
	}{
		{"", "Missing feature query parameter."},
		{"oidc_convert", `Invalid feature: "oidc_convert"`},
	}
	for _, tt := range tests {
		_, err := c.CryptoKeys(ctx, tt.feature)
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != 400 || e.Message != tt.message {
			t.Errorf("feature %q: err = %v, want 400 %q", tt.feature, err, tt.message)
		}
	}
}

func TestCryptoKeysInvalid(t *testing.T) {
	f, srv := newFakeCoderd(t)
	c := f.client(t, srv)
	good := wireKey(testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{}))
	tests := []struct {
		name string
		key  CryptoKey
	}{
		{"not hex", CryptoKey{Feature: string(tokens.FeatureAppToken), Secret: "zz", Sequence: 1}},
		{"short secret", CryptoKey{Feature: string(tokens.FeatureAppToken), Secret: "abcd", Sequence: 1}},
		{"other feature", CryptoKey{Feature: string(tokens.FeatureAPIKey), Secret: good.Secret[:64], Sequence: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mu.Lock()
			f.keys[tokens.FeatureAppToken] = []CryptoKey{good, tt.key}
			f.mu.Unlock()
			keys, err := c.CryptoKeys(context.Background(), tokens.FeatureAppToken)
			if !errors.Is(err, ErrInvalidResponse) || keys != nil {
				t.Errorf("keys %v, err %v; want ErrInvalidResponse", keys, err)
			}
		})
	}
}

var subdomainReq = appurl.Request{
	AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: "alice",
	WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code",
}

func TestIssueSignedAppToken(t *testing.T) {
	f, srv := newFakeCoderd(t)
	c := f.client(t, srv)
	ctx := context.Background()
	req := IssueTokenRequest{
		AppRequest: subdomainReq, PathAppBaseURL: "https://proxy.example.com", AppHostname: "*.apps.example.com",
		AppPath: "/x/y", AppQuery: "a=1&b=<2>", SessionToken: "sess-123",
	}
	res, err := c.IssueSignedAppToken(ctx, req, "203.0.113.7")
	if err != nil {
		t.Fatal(err)
	}
	if res.Token != "header.payload.sig" || res.Relay != nil {
		t.Errorf("result = %+v", res)
	}
	r := f.last()
	if r.Header.Get("Accept") != "text/html" || r.Header.Get("Coder-Workspace-Proxy-Real-IP") != "203.0.113.7" || r.Header.Get(ProxyTokenHeader) != f.token() {
		t.Errorf("headers = %v", r.Header)
	}
	var wire map[string]any
	if err := json.Unmarshal(r.Body, &wire); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"app_request": map[string]any{
			"access_method": "subdomain", "base_path": "/", "app_prefix": "", "username_or_id": "alice",
			"workspace_name_or_id": "dev", "agent_name_or_id": "main", "app_slug_or_port": "code",
		},
		"path_app_base_url": "https://proxy.example.com", "app_hostname": "*.apps.example.com",
		"app_path": "/x/y", "app_query": "a=1&b=<2>", "session_token": "sess-123",
	}
	if !reflect.DeepEqual(wire, want) {
		t.Errorf("issue body = %v\nwant %v", wire, want)
	}
	if !strings.Contains(string(r.Body), `"a=1&b=<2>"`) {
		t.Errorf("query HTML-escaped in %s", r.Body)
	}
}

func TestIssueRelaysNon201Verbatim(t *testing.T) {
	f, srv := newFakeCoderd(t)
	c := f.client(t, srv)
	redirect := "https://coder.example.com/api/v2/applications/auth-redirect?redirect_uri=https%3A%2F%2Fcode--dev--alice.apps.example.com%2F"
	page := "<!doctype html><title>Application Not Found</title>"
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request, req IssueTokenRequest)
		status  int
		header  map[string]string
		body    string
	}{
		{"303 login redirect, not followed", func(w http.ResponseWriter, r *http.Request, _ IssueTokenRequest) {
			http.Redirect(w, r, redirect, http.StatusSeeOther)
		}, 303, map[string]string{"Location": redirect}, ""},
		{"404 HTML page", func(w http.ResponseWriter, _ *http.Request, _ IssueTokenRequest) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.WriteHeader(404)
			_, _ = w.Write([]byte(page))
		}, 404, map[string]string{"Content-Type": "text/html; charset=utf-8"}, page},
		{"404 JSON for anonymous terminal", func(w http.ResponseWriter, _ *http.Request, _ IssueTokenRequest) {
			writeJSON(w, 404, errBody{Message: "Resource not found or you do not have access to this resource"})
		}, 404, map[string]string{"Content-Type": "application/json; charset=utf-8"}, `{"message":"Resource not found or you do not have access to this resource"}` + "\n"},
		{"502 application unavailable", func(w http.ResponseWriter, _ *http.Request, _ IssueTokenRequest) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			_, _ = w.Write([]byte("Application Unavailable"))
		}, 502, nil, "Application Unavailable"},
		{"200 is relayed too", func(w http.ResponseWriter, _ *http.Request, _ IssueTokenRequest) {
			w.WriteHeader(200)
		}, 200, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.issue = tt.handler
			res, err := c.IssueSignedAppToken(context.Background(), IssueTokenRequest{AppRequest: subdomainReq}, "")
			if err != nil {
				t.Fatal(err)
			}
			if res.Token != "" || res.Relay == nil {
				t.Fatalf("result %+v", res)
			}
			if res.Relay.Status != tt.status || string(res.Relay.Body) != tt.body {
				t.Errorf("relay = %d %q, want %d %q", res.Relay.Status, res.Relay.Body, tt.status, tt.body)
			}
			for k, v := range tt.header {
				if got := res.Relay.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.status == 404 && tt.body == page {
				if got := res.Relay.Header.Values("Set-Cookie"); len(got) != 2 {
					t.Errorf("Set-Cookie values %v", got)
				}
			}
		})
	}
	if h := f.last().Header.Get(RealIPHeader); h != "" {
		t.Errorf("empty client IP sent as %q", h)
	}
}

func TestIssue201WithoutToken(t *testing.T) {
	f, srv := newFakeCoderd(t)
	f.issue = func(w http.ResponseWriter, _ *http.Request, _ IssueTokenRequest) {
		writeJSON(w, 201, map[string]string{})
	}
	_, err := f.client(t, srv).IssueSignedAppToken(context.Background(), IssueTokenRequest{}, "")
	if !errors.Is(err, ErrInvalidResponse) {
		t.Errorf("err = %v, want ErrInvalidResponse", err)
	}
}

func TestResolveAppOwner(t *testing.T) {
	f, srv := newFakeCoderd(t)
	owner := uuid.New()
	f.owners["alice/dev"] = owner
	c := f.client(t, srv)
	ctx := context.Background()
	// Access method and base path are filled in as coderd requires.
	got, err := c.ResolveAppOwner(ctx, appurl.Request{UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"})
	if err != nil || got != owner {
		t.Fatalf("owner = %v, %v; want %v", got, err, owner)
	}
	if !strings.Contains(string(f.last().Body), `"app_request":{"access_method":"subdomain","base_path":"/"`) {
		t.Errorf("body %s", f.last().Body)
	}
	_, err = c.ResolveAppOwner(ctx, appurl.Request{UsernameOrID: "bob", WorkspaceNameOrID: "dev", AppSlugOrPort: "code"})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 404 || e.Message != "Application not found." {
		t.Errorf("unknown app: %v", err)
	}
	_, err = c.ResolveAppOwner(ctx, appurl.Request{AccessMethod: appurl.AccessMethodPath, UsernameOrID: "alice", WorkspaceNameOrID: "dev", AppSlugOrPort: "code"})
	if !errors.As(err, &e) || e.StatusCode != 400 || e.Message != "Invalid access method." {
		t.Errorf("path request: %v", err)
	}
}

func TestReportAppStats(t *testing.T) {
	f, srv := newFakeCoderd(t)
	c := f.client(t, srv)
	ctx := context.Background()
	if err := c.ReportAppStats(ctx, nil); err != nil || f.last() != nil {
		t.Fatalf("empty batch: %v, request %v", err, f.last())
	}
	s := StatsReport{
		UserID: uuid.New(), WorkspaceID: uuid.New(), AgentID: uuid.New(), AccessMethod: appurl.AccessMethodTerminal,
		SessionID: uuid.New(), SessionStartedAt: t0, Requests: 1,
	}
	if err := c.ReportAppStats(ctx, []StatsReport{s}); err != nil {
		t.Fatal(err)
	}
	if len(f.stats) != 1 || !reflect.DeepEqual(f.stats[0], s) {
		t.Errorf("stats = %+v", f.stats)
	}
	var wire struct {
		Stats []map[string]any `json:"stats"`
	}
	_ = json.Unmarshal(f.last().Body, &wire)
	keys := []string{"user_id", "workspace_id", "agent_id", "access_method", "slug_or_port", "session_id", "session_started_at", "session_ended_at", "requests"}
	if len(wire.Stats) != 1 || len(wire.Stats[0]) != len(keys) {
		t.Fatalf("wire stats %v", wire.Stats)
	}
	for _, k := range keys {
		if _, ok := wire.Stats[0][k]; !ok {
			t.Errorf("missing %q in %v", k, wire.Stats[0])
		}
	}
	if wire.Stats[0]["session_ended_at"] != "0001-01-01T00:00:00Z" || wire.Stats[0]["slug_or_port"] != "" {
		t.Errorf("open terminal session encoded as %v", wire.Stats[0])
	}
}

func TestURLPathIgnored(t *testing.T) {
	// API paths are absolute, like coderd's SDK: a path on the configured
	// URL does not prefix them.
	f, srv := newFakeCoderd(t)
	c := f.client(t, srv, func(o *Options) { u, _ := url.Parse(srv.URL + "/some/prefix/"); o.URL = u })
	if _, err := c.BuildInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := f.last().Path; p != "/api/v2/buildinfo" {
		t.Errorf("path %q", p)
	}
}
