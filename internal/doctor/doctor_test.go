package doctor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/derp"
	devprimary "github.com/wsedge/wsedge/dev/primary"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/doctor"
	"github.com/wsedge/wsedge/internal/envoyrun"
	"github.com/wsedge/wsedge/primary"
)

// world is the dev primary and a stand-in edge (the real DERP handler and
// a /healthz), both on loopback.
type world struct {
	primaryURL *url.URL
	token      string
	edge       *url.URL
}

type refuseTransport struct{}

func (refuseTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("doctor test: outbound health polls are disabled")
}

func newWorld(t *testing.T) *world { return newWorldWith(t, devprimary.Options{}) }

// newWorldWith starts the dev primary with opts (its URL, health polling
// and logger are filled in) and an edge serving DERP and /healthz.
func newWorldWith(t *testing.T, opts devprimary.Options) *world {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	u, _ := url.Parse("http://" + ts.Listener.Addr().String())
	opts.AccessURL = u
	opts.HealthInterval = time.Hour
	opts.HTTPClient = &http.Client{Transport: refuseTransport{}}
	opts.Logger = slog.New(slog.DiscardHandler)
	dev, err := devprimary.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = dev.Handler()
	ts.Start()
	t.Cleanup(func() { ts.Close(); _ = dev.Close() })

	d, err := derp.New(derp.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	mux := http.NewServeMux()
	mux.Handle("/derp/", d)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") })
	edge := httptest.NewServer(mux)
	t.Cleanup(edge.Close)
	eu, _ := url.Parse(edge.URL)
	return &world{primaryURL: u, token: dev.ProxyToken(), edge: eu}
}

func client(t *testing.T, u *url.URL, token string) *primary.Client {
	t.Helper()
	c, err := primary.New(primary.Options{URL: u, ProxyToken: token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// config checks the world with subdomain apps on the edge's own port.
func (w *world) config(t *testing.T) doctor.Config {
	return doctor.Config{
		Primary:          client(t, w.primaryURL, w.token),
		AccessURL:        w.edge.String(),
		WildcardHostname: "*.apps.localhost:" + w.edge.Port(),
		DERP:             true,
		CheckEdge:        true,
		Timeout:          5 * time.Second,
	}
}

func byName(t *testing.T, rs []doctor.Result) map[string]doctor.Result {
	t.Helper()
	m := map[string]doctor.Result{}
	for _, r := range rs {
		if _, dup := m[r.Name]; dup {
			t.Fatalf("check %q reported twice", r.Name)
		}
		m[r.Name] = r
	}
	return m
}

func envoyConfig(t *testing.T) *envoy.Config {
	t.Helper()
	wd, _ := os.Getwd()
	if _, err := envoyrun.FindBinary(wd); err != nil {
		t.Skipf("no envoy: %v (run make setup)", err)
	}
	c := envoy.DefaultConfig()
	return &c
}

func TestAllChecksPassAgainstTheDevPrimary(t *testing.T) {
	w := newWorld(t)
	cfg := w.config(t)
	cfg.Envoy = envoyConfig(t)
	wd, _ := os.Getwd()
	cfg.EnvoySearchDirs = []string{wd}
	cfg.ProxyToken = w.token
	rs := doctor.Run(context.Background(), cfg)
	want := []string{doctor.CheckPrimary, doctor.CheckToken, doctor.CheckKeys, doctor.CheckAccessURL, doctor.CheckWildcard, doctor.CheckEnvoy, doctor.CheckDERP, doctor.CheckEdge}
	if len(rs) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(rs), len(want), rs)
	}
	for i, r := range rs {
		if r.Name != want[i] || r.Status != doctor.Pass {
			t.Errorf("result %d: %s %s %q (hint %q), want %s passing", i, r.Name, r.Status, r.Detail, r.Hint, want[i])
		}
	}
	if doctor.Failed(rs) {
		t.Fatal("Failed reports a failure")
	}
	m := byName(t, rs)
	if !strings.Contains(m[doctor.CheckKeys].Detail, "workspace_apps_token: ") || !strings.Contains(m[doctor.CheckKeys].Detail, "workspace_apps_api_key: ") {
		t.Errorf("keys detail %q does not name both features", m[doctor.CheckKeys].Detail)
	}
	if id, _, _ := strings.Cut(w.token, ":"); m[doctor.CheckToken].Detail != "accepted by the primary (proxy "+id+")" {
		t.Errorf("token detail %q", m[doctor.CheckToken].Detail)
	}
	if !strings.Contains(m[doctor.CheckEnvoy].Detail, "valid for envoy 1.") {
		t.Errorf("envoy detail %q", m[doctor.CheckEnvoy].Detail)
	}
	var out bytes.Buffer
	if err := doctor.Print(&out, rs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "✓ primary ") || strings.Contains(out.String(), "✗") || !strings.Contains(out.String(), "8 passed, 0 failed") {
		t.Errorf("printed:\n%s", out.String())
	}
}

func TestWrongTokenFailsOnlyTheTokenCheckWithAHint(t *testing.T) {
	w := newWorld(t)
	id, _, _ := strings.Cut(w.token, ":")
	cfg := w.config(t)
	cfg.Primary = client(t, w.primaryURL, id+":"+strings.Repeat("0", 64))
	cfg.ProxyToken = id + ":" + strings.Repeat("0", 64)
	rs := doctor.Run(context.Background(), cfg)
	m := byName(t, rs)
	tok := m[doctor.CheckToken]
	if tok.Status != doctor.Fail {
		t.Fatalf("token check %s %q, want fail", tok.Status, tok.Detail)
	}
	if tok.Detail != "token rejected: Invalid external proxy token: Invalid proxy token secret." {
		t.Errorf("detail %q", tok.Detail)
	}
	if !strings.Contains(tok.Hint, "coder wsproxy regenerate-token") {
		t.Errorf("hint %q does not name the regenerate command", tok.Hint)
	}
	for _, r := range rs {
		switch r.Name {
		case doctor.CheckToken, doctor.CheckEnvoy:
		case doctor.CheckKeys:
			if r.Status != doctor.Warn {
				t.Errorf("keys %s %q, want a warning (not checked)", r.Status, r.Detail)
			}
		default:
			if r.Status != doctor.Pass {
				t.Errorf("%s %s %q, want pass", r.Name, r.Status, r.Detail)
			}
		}
	}
	if !doctor.Failed(rs) {
		t.Fatal("Failed reports no failure")
	}
	var out bytes.Buffer
	_ = doctor.Print(&out, rs)
	if !strings.Contains(out.String(), "✗ proxy token") || !strings.Contains(out.String(), "→ create a new one with `coder wsproxy regenerate-token") {
		t.Errorf("printed:\n%s", out.String())
	}
}

// TestUnlicensedPrimary: a primary whose licence lacks workspace proxies
// answers the proxy API with 403 before looking at the token; the doctor
// says so and points at the licence, not at the token.
func TestUnlicensedPrimary(t *testing.T) {
	w := newWorldWith(t, devprimary.Options{Unlicensed: true})
	cfg := w.config(t)
	rs := doctor.Run(context.Background(), cfg)
	m := byName(t, rs)
	tok := m[doctor.CheckToken]
	if tok.Status != doctor.Fail || tok.Detail != "refused: "+devprimary.UnlicensedMessage {
		t.Fatalf("token check %s %q", tok.Status, tok.Detail)
	}
	if !strings.Contains(tok.Hint, "license includes workspace proxies") {
		t.Errorf("hint %q does not point at the licence", tok.Hint)
	}
	if m[doctor.CheckPrimary].Status != doctor.Pass {
		t.Errorf("primary check %s %q: the primary itself is fine", m[doctor.CheckPrimary].Status, m[doctor.CheckPrimary].Detail)
	}
}

func TestMalformedTokenIsExplained(t *testing.T) {
	w := newWorld(t)
	cfg := w.config(t)
	cfg.ProxyToken = "my-proxy-token"
	cfg.Primary = client(t, w.primaryURL, cfg.ProxyToken)
	cfg.DERP, cfg.CheckEdge = false, false
	r := byName(t, doctor.Run(context.Background(), cfg))[doctor.CheckToken]
	if r.Status != doctor.Fail || !strings.HasPrefix(r.Detail, "token rejected: Invalid external proxy token;") ||
		!strings.Contains(r.Detail, "<proxy uuid>:<64-character secret>") || strings.Contains(r.Detail, "my-proxy-token") {
		t.Fatalf("%s %q", r.Status, r.Detail)
	}
}

func TestPrimaryCheckFailures(t *testing.T) {
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	_ = closed.Close()
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: the closed port
		detail  string
		hint    string
	}{
		{
			name: "html page",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				_, _ = io.WriteString(w, "<html>welcome to nginx</html>")
			},
			detail: "answered, but not with Coder's build info",
			hint:   "--primary-url",
		},
		{
			name: "workspace proxy",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(map[string]any{"version": "v2.20.0", "workspace_proxy": true})
			},
			detail: "is a workspace proxy, not the Coder primary",
			hint:   "not a workspace proxy",
		},
		{
			name:    "404",
			handler: http.NotFound,
			detail:  "answered 404",
			hint:    "--primary-url",
		},
		{name: "unreachable", detail: "unreachable: dial tcp " + closedAddr, hint: "can reach it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := url.Parse("http://" + closedAddr)
			if tt.handler != nil {
				ts := httptest.NewServer(tt.handler)
				t.Cleanup(ts.Close)
				u, _ = url.Parse(ts.URL)
			}
			rs := doctor.Run(context.Background(), doctor.Config{
				Primary:   client(t, u, "00000000-0000-0000-0000-000000000001:"+strings.Repeat("a", 64)),
				AccessURL: "http://127.0.0.1:1",
				Timeout:   2 * time.Second,
			})
			m := byName(t, rs)
			p := m[doctor.CheckPrimary]
			if rs[0].Name != doctor.CheckPrimary || p.Status != doctor.Fail || !strings.Contains(p.Detail, tt.detail) || !strings.Contains(p.Hint, tt.hint) {
				t.Fatalf("primary check %s %q hint %q; want fail with %q / %q", p.Status, p.Detail, p.Hint, tt.detail, tt.hint)
			}
			for _, n := range []string{doctor.CheckToken, doctor.CheckKeys} {
				if m[n].Status != doctor.Warn || !strings.Contains(m[n].Detail, "not checked") {
					t.Errorf("%s %s %q, want not checked", n, m[n].Status, m[n].Detail)
				}
			}
			if !doctor.Failed(rs) {
				t.Fatal("Failed reports no failure")
			}
		})
	}
}

// fakeKeys is a coderd stand-in whose app-token keys are all deleted.
func fakeKeys(now time.Time) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/buildinfo", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"version":"v2.99.0","workspace_proxy":false}`)
	})
	mux.HandleFunc("GET /api/v2/workspaceproxies/me/crypto-keys", func(w http.ResponseWriter, r *http.Request) {
		f := r.URL.Query().Get("feature")
		n := 64
		deletes := now.Add(-time.Hour)
		if f == "workspace_apps_api_key" {
			n, deletes = 32, time.Time{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"crypto_keys": []primary.CryptoKey{{
			Feature: f, Secret: strings.Repeat("ab", n), Sequence: 7, StartsAt: now.Add(-48 * time.Hour), DeletesAt: deletes,
		}}})
	})
	return mux
}

func TestNoUsableKeyFails(t *testing.T) {
	now := time.Now()
	ts := httptest.NewServer(fakeKeys(now))
	t.Cleanup(ts.Close)
	u, _ := url.Parse(ts.URL)
	rs := doctor.Run(context.Background(), doctor.Config{
		Primary:   client(t, u, "00000000-0000-0000-0000-000000000001:"+strings.Repeat("a", 64)),
		AccessURL: "http://127.0.0.1:1",
		Now:       func() time.Time { return now },
	})
	m := byName(t, rs)
	if m[doctor.CheckToken].Status != doctor.Pass {
		t.Fatalf("token %+v", m[doctor.CheckToken])
	}
	k := m[doctor.CheckKeys]
	if k.Status != doctor.Fail || !strings.Contains(k.Detail, "workspace_apps_token: 1 (0 usable)") ||
		!strings.Contains(k.Detail, "workspace_apps_api_key: 1 (1 usable)") || !strings.HasSuffix(k.Detail, "no usable key for workspace_apps_token") {
		t.Fatalf("keys %s %q", k.Status, k.Detail)
	}
}

func TestDERPAndEdgeUnreachable(t *testing.T) {
	w := newWorld(t)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := closed.Addr().String()
	_ = closed.Close()
	cfg := w.config(t)
	cfg.AccessURL = "http://" + addr
	cfg.WildcardHostname = ""
	m := byName(t, doctor.Run(context.Background(), cfg))
	for _, n := range []string{doctor.CheckDERP, doctor.CheckEdge} {
		r := m[n]
		if r.Status != doctor.Fail || !strings.Contains(r.Detail, "GET http://"+addr) || !strings.Contains(r.Hint, "Envoy") {
			t.Errorf("%s %s %q hint %q", n, r.Status, r.Detail, r.Hint)
		}
	}
	if m[doctor.CheckPrimary].Status != doctor.Pass || m[doctor.CheckToken].Status != doctor.Pass {
		t.Errorf("primary/token should pass: %+v %+v", m[doctor.CheckPrimary], m[doctor.CheckToken])
	}
	if m[doctor.CheckWildcard].Status != doctor.Skip {
		t.Errorf("empty wildcard: %+v", m[doctor.CheckWildcard])
	}

	// DERP off: not checked; the edge check only runs when asked for.
	cfg.DERP, cfg.CheckEdge = false, false
	rs := doctor.Run(context.Background(), cfg)
	m = byName(t, rs)
	if m[doctor.CheckDERP].Status != doctor.Skip {
		t.Errorf("derp off: %+v", m[doctor.CheckDERP])
	}
	if _, ok := m[doctor.CheckEdge]; ok {
		t.Errorf("edge checked without CheckEdge")
	}
	if doctor.Failed(rs) {
		t.Errorf("failed: %+v", rs)
	}
}

func TestDERPAnswerNot200(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
	}))
	t.Cleanup(ts.Close)
	m := byName(t, doctor.Run(context.Background(), doctor.Config{AccessURL: ts.URL, DERP: true}))
	if r := m[doctor.CheckDERP]; r.Status != doctor.Fail || !strings.HasSuffix(r.Detail, "status 503: no healthy upstream") {
		t.Fatalf("derp %s %q", r.Status, r.Detail)
	}
}
