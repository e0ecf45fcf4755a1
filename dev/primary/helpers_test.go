package devprimary

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

// testClock is an injected clock tests move by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Fixed IDs of the test catalog.
var (
	aliceID     = uuid.MustParse("00000000-0000-4000-8000-0000000a11ce")
	bobID       = uuid.MustParse("00000000-0000-4000-8000-000000000b0b")
	devID       = uuid.MustParse("00000000-0000-4000-8000-00000000d001")
	mainAgentID = uuid.MustParse("00000000-0000-4000-8000-00000000a001")
	disAgentID  = uuid.MustParse("00000000-0000-4000-8000-00000000a003")
	mainToken   = "00000000-0000-4000-8000-0000000070c1"
	proxyID     = uuid.MustParse("00000000-0000-4000-8000-0000000f0001")
	proxy2ID    = uuid.MustParse("00000000-0000-4000-8000-0000000f0002")
	deletedID   = uuid.MustParse("00000000-0000-4000-8000-0000000f0003")
	proxySecret = strings.Repeat("ab", 32)
)

const (
	aliceToken = "alice00001-alicesecret00000000000"
	bobToken   = "bob0000001-bobsecret0000000000000"
	carolToken = "carol00001-carolsecret00000000000"
)

// testCatalogYAML: alice owns dev (connected agent main with apps at
// every sharing level), off (stopped) and dis (agent disconnected); bob
// is another user; carol is a site owner.
const testCatalogYAML = `
users:
  - id: 00000000-0000-4000-8000-0000000a11ce
    username: alice
    email: alice@example.com
    password: alice-pw
    session_tokens: [alice00001-alicesecret00000000000]
  - id: 00000000-0000-4000-8000-000000000b0b
    username: bob
    email: bob@example.com
    password: bob-pw
    session_tokens: [bob0000001-bobsecret0000000000000]
  - id: 00000000-0000-4000-8000-0000000ca201
    username: carol
    email: carol@example.com
    site_owner: true
    session_tokens: [carol00001-carolsecret00000000000]
workspaces:
  - id: 00000000-0000-4000-8000-00000000d001
    owner: alice
    name: dev
    agents:
      - id: 00000000-0000-4000-8000-00000000a001
        name: main
        auth_token: 00000000-0000-4000-8000-0000000070c1
        connected: true
        apps:
          - {slug: owner-app, url: "http://127.0.0.1:8080", sharing_level: owner, subdomain: true}
          - {slug: auth-app, url: "http://127.0.0.1:8081", sharing_level: authenticated, cors_behavior: passthru}
          - {slug: org-app, url: "http://127.0.0.1:8082", sharing_level: organization}
          - {slug: pub-app, url: "http://127.0.0.1:8083", sharing_level: public}
          - {slug: query-app, url: "http://127.0.0.1:8084/?folder=/home/coder", sharing_level: owner}
    port_shares:
      - {agent: main, port: 9000, share_level: public}
  - id: 00000000-0000-4000-8000-00000000d002
    owner: alice
    name: "off"
    stopped: true
    agents:
      - id: 00000000-0000-4000-8000-00000000a002
        name: main
        auth_token: 00000000-0000-4000-8000-0000000070c2
        connected: true
        apps:
          - {slug: pub-app, url: "http://127.0.0.1:8083", sharing_level: public}
  - id: 00000000-0000-4000-8000-00000000d003
    owner: alice
    name: dis
    agents:
      - id: 00000000-0000-4000-8000-00000000a003
        name: main
        auth_token: 00000000-0000-4000-8000-0000000070c3
        connected: false
        apps:
          - {slug: pub-app, url: "http://127.0.0.1:8083", sharing_level: public}
`

// Where the test proxy says it lives.
const (
	proxyAccessURL = "https://proxy.test:8443"
	proxyWildcard  = "*.apps.proxy.test"
)

type harness struct {
	t     *testing.T
	s     *Server
	ts    *httptest.Server
	clock *testClock
	url   string
}

func testCatalog(t *testing.T, edit func(*Catalog)) *Catalog {
	t.Helper()
	c, err := ParseCatalog([]byte(testCatalogYAML))
	if err != nil {
		t.Fatalf("test catalog: %v", err)
	}
	if edit != nil {
		edit(c)
	}
	return c
}

// newHarness serves a dev primary on 127.0.0.1 with the test catalog, two
// proxies and a deleted one, and a test clock.
func newHarness(t *testing.T, edit func(*Options)) *harness {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	access, _ := url.Parse(base)
	clock := newTestClock()
	opts := Options{
		Catalog:   testCatalog(t, nil),
		AccessURL: access,
		Proxies: []ProxySpec{
			{ID: proxyID, Name: "Frankfurt", Secret: proxySecret},
			{ID: proxy2ID, Name: "sydney", Secret: strings.Repeat("cd", 32)},
			{ID: deletedID, Name: "gone", Secret: strings.Repeat("ef", 32), Deleted: true},
		},
		HealthInterval: time.Hour,
		HTTPClient:     loopbackOnly,
		Now:            clock.Now,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if edit != nil {
		edit(&opts)
	}
	s, err := New(opts)
	if err != nil {
		ts.Close()
		t.Fatalf("New: %v", err)
	}
	ts.Config.Handler = s.Handler()
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &harness{t: t, s: s, ts: ts, clock: clock, url: base}
}

// loopbackOnly polls proxies on loopback IPs only: tests register
// made-up hostnames such as proxy.test, which must never be resolved or
// dialled.
var loopbackOnly = &http.Client{
	Timeout: 5 * time.Second,
	Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("test dialer: %s is not a loopback address", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	},
}

// noFollow is a client that hands redirects back.
var noFollow = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

// do sends a request; body may be nil, a string (sent as is) or a value
// (sent as JSON). header pairs follow.
func (h *harness) do(method, path string, body any, header ...string) result {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

// proxy sends a request authenticated as the first proxy.
func (h *harness) proxy(method, path string, body any) result {
	h.t.Helper()
	return h.do(method, path, body, proxyTokenHeader, h.s.ProxyToken())
}

// register registers the first proxy at proxyAccessURL/proxyWildcard.
func (h *harness) register(replica uuid.UUID) result {
	h.t.Helper()
	return h.proxy(http.MethodPost, "/api/v2/workspaceproxies/me/register", map[string]any{
		"access_url":        proxyAccessURL,
		"wildcard_hostname": proxyWildcard,
		"derp_enabled":      true,
		"replica_id":        replica,
		"hostname":          "host-" + replica.String()[:4],
		"version":           "v2.26.0",
	})
}

// keySet fetches both features' keys from /crypto-keys as a proxy would.
func (h *harness) keySet() *tokens.KeySet {
	h.t.Helper()
	var keys []tokens.Key
	for _, f := range []tokens.Feature{tokens.FeatureAppToken, tokens.FeatureAPIKey} {
		res := h.proxy(http.MethodGet, "/api/v2/workspaceproxies/me/crypto-keys?feature="+string(f), nil)
		if res.status != http.StatusOK {
			h.t.Fatalf("crypto-keys %s: %d %s", f, res.status, res.body)
		}
		var out struct {
			CryptoKeys []struct {
				Feature   string    `json:"feature"`
				Secret    string    `json:"secret"`
				DeletesAt time.Time `json:"deletes_at"`
				Sequence  int32     `json:"sequence"`
				StartsAt  time.Time `json:"starts_at"`
			} `json:"crypto_keys"`
		}
		res.json(h.t, &out)
		for _, k := range out.CryptoKeys {
			key, err := tokens.ParseKey(tokens.Feature(k.Feature), k.Secret, k.Sequence, k.StartsAt, k.DeletesAt)
			if err != nil {
				h.t.Fatalf("served key: %v", err)
			}
			keys = append(keys, key)
		}
	}
	return tokens.NewKeySet(keys...)
}

// verifier checks tokens with keys served by /crypto-keys, at the test
// clock's time.
func (h *harness) verifier() *tokens.Verifier {
	return &tokens.Verifier{Keys: h.keySet().Source(h.clock.Now), Now: h.clock.Now}
}

func wantStatus(t *testing.T, r result, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

// wantJSONError checks coderd's JSON error body exactly.
func wantJSONError(t *testing.T, r result, status int, message, detail string) {
	t.Helper()
	wantStatus(t, r, status)
	if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var got map[string]any
	r.json(t, &got)
	if got["message"] != message {
		t.Errorf("message %q, want %q", got["message"], message)
	}
	gotDetail, _ := got["detail"].(string)
	if gotDetail != detail {
		t.Errorf("detail %q, want %q", gotDetail, detail)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
