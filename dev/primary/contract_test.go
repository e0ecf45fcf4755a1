package devprimary_test

// The contract suite: the primary client, which knows nothing of the dev
// primary, against the dev primary over real HTTP on loopback. Both were
// written independently from docs/protocol.md, so a disagreement on
// a field name, a status or a message fails here.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	devprimary "github.com/wsedge/wsedge/dev/primary"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tokens"
)

// contractClock is a settable clock shared by the dev primary and the
// client's key cache.
type contractClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *contractClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *contractClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *contractClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type contract struct {
	dev    *devprimary.Server
	url    *url.URL
	client *primary.Client
	clock  *contractClock
}

const (
	contractAccessURL = "https://proxy.contract.test"
	contractWildcard  = "*.apps.contract.test"
)

var (
	aliceID   = uuid.MustParse("0e0f6f52-5f2a-4c2b-9c59-a11ce0000001")
	agentMain = uuid.MustParse("7a9e4b10-2c3d-4f5e-8a6b-a6e170000001")
)

func newContract(t *testing.T) *contract {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	u, _ := url.Parse("http://" + ts.Listener.Addr().String())
	clock := &contractClock{now: time.Now().UTC().Truncate(time.Second)}
	dev, err := devprimary.New(devprimary.Options{
		AccessURL:      u,
		KeyRotation:    24 * time.Hour,
		HealthInterval: time.Hour,
		// Registered proxy URLs are made up; never poll them.
		HTTPClient: &http.Client{Transport: refuseTransport{}},
		Now:        clock.Now,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = dev.Handler()
	ts.Start()
	t.Cleanup(func() { ts.Close(); _ = dev.Close() })
	c := &contract{dev: dev, url: u, clock: clock}
	c.client = c.clientWithToken(t, dev.ProxyToken())
	return c
}

type refuseTransport struct{}

func (refuseTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("contract test: outbound health polls are disabled")
}

func (c *contract) clientWithToken(t *testing.T, token string) *primary.Client {
	t.Helper()
	cl, err := primary.New(primary.Options{URL: c.url, ProxyToken: token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func (c *contract) register(t *testing.T, replica uuid.UUID) primary.RegisterResponse {
	t.Helper()
	res, err := c.client.Register(context.Background(), primary.RegisterRequest{
		AccessURL: contractAccessURL, WildcardHostname: contractWildcard, DerpEnabled: true,
		ReplicaID: replica, Hostname: "contract", ReplicaRelayAddress: "http://127.0.0.1:1", Version: "v2.99.0",
	})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return res
}

func wantError(t *testing.T, err error, status int, message string) *primary.Error {
	t.Helper()
	var pe *primary.Error
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v (%T), want a *primary.Error", err, err)
	}
	if pe.StatusCode != status || pe.Message != message {
		t.Fatalf("got %d %q (detail %q), want %d %q", pe.StatusCode, pe.Message, pe.Detail, status, message)
	}
	return pe
}

func TestContractBuildInfo(t *testing.T) {
	c := newContract(t)
	bi, err := c.client.BuildInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if bi.WorkspaceProxy || bi.Version == "" {
		t.Fatalf("buildinfo %+v: want a primary with a version", bi)
	}
}

func TestContractProxyAuth(t *testing.T) {
	c := newContract(t)
	id := strings.SplitN(c.dev.ProxyToken(), ":", 2)[0]
	cases := []struct {
		name, token, detail string
	}{
		{"wrong secret", id + ":" + strings.Repeat("0", 64), "Invalid proxy token secret."},
		{"unknown proxy", uuid.NewString() + ":" + strings.Repeat("0", 64), "Proxy not found."},
		{"not a token", "garbage", ""},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.clientWithToken(t, tt.token).CryptoKeys(context.Background(), tokens.FeatureAppToken)
			pe := wantError(t, err, http.StatusUnauthorized, "Invalid external proxy token")
			if tt.detail != "" && pe.Detail != tt.detail {
				t.Errorf("detail %q, want %q", pe.Detail, tt.detail)
			}
		})
	}
}

func TestContractRegistration(t *testing.T) {
	c := newContract(t)
	a, b := uuid.New(), uuid.New()
	first := c.register(t, a)
	if first.DERPMeshKey == "" || first.DERPRegionID < 10000 {
		t.Errorf("register: mesh key %q, region %d; want a key and a proxy region id ≥ 10000", first.DERPMeshKey, first.DERPRegionID)
	}
	second := c.register(t, b)
	if len(second.SiblingReplicas) != 1 || second.SiblingReplicas[0].ID != a {
		t.Errorf("second replica's siblings %+v, want the first replica", second.SiblingReplicas)
	}
	if second.DERPMeshKey != first.DERPMeshKey || second.DERPRegionID != first.DERPRegionID {
		t.Errorf("replicas of one proxy must share mesh key and region")
	}

	_, err := c.client.Register(context.Background(), primary.RegisterRequest{AccessURL: "ftp://x", ReplicaID: uuid.New()})
	wantError(t, err, http.StatusBadRequest, "URL is invalid.")

	if err := c.client.Deregister(context.Background(), a); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	// A deregistered replica id can never come back.
	_, err = c.client.Register(context.Background(), primary.RegisterRequest{AccessURL: contractAccessURL, ReplicaID: a})
	if !primary.IsStatus(err, http.StatusInternalServerError) {
		t.Errorf("re-used replica id: err = %v, want a 500 from the primary", err)
	}
	if err := c.client.Deregister(context.Background(), a); !primary.IsStatus(err, http.StatusInternalServerError) {
		t.Errorf("second deregister: err = %v, want 500", err)
	}
	if err := c.client.Deregister(context.Background(), uuid.New()); !primary.IsStatus(err, http.StatusNotFound) {
		t.Errorf("unknown replica: err = %v, want 404", err)
	}

	// The registration loop against the dev primary: start, re-register,
	// deregister on shutdown.
	reg := primary.NewRegistrar(c.client, primary.RegistrarOptions{
		Request:  primary.RegisterRequest{AccessURL: contractAccessURL, WildcardHostname: contractWildcard, DerpEnabled: true, Hostname: "loop"},
		Interval: 20 * time.Millisecond,
	})
	if _, err := reg.Start(context.Background()); err != nil {
		t.Fatalf("registrar start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = reg.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	if h := reg.Health(); !h.Registered || h.Unhealthy || h.ConsecutiveFailures != 0 {
		t.Errorf("registrar health after re-registering: %+v", h)
	}
	if err := reg.Deregister(context.Background()); err != nil {
		t.Errorf("registrar deregister: %v", err)
	}
}

func TestContractCryptoKeys(t *testing.T) {
	c := newContract(t)
	for _, f := range []tokens.Feature{tokens.FeatureAppToken, tokens.FeatureAPIKey} {
		keys, err := c.client.CryptoKeys(context.Background(), f)
		if err != nil || len(keys) == 0 {
			t.Fatalf("%s: %d keys, %v", f, len(keys), err)
		}
		signing, _ := c.dev.SigningKey(f)
		found := false
		for _, k := range keys {
			found = found || (k.Sequence == signing.Sequence && string(k.Secret) == string(signing.Secret))
		}
		if !found {
			t.Errorf("%s: the primary's signing key is not among the fetched keys", f)
		}
	}
	_, err := c.client.CryptoKeys(context.Background(), tokens.Feature("oidc_convert"))
	wantError(t, err, http.StatusBadRequest, `Invalid feature: "oidc_convert"`)
}

// TestContractIssueAndRotation issues tokens through the client, verifies
// them with the client's key cache, rotates the primary's keys while
// tokens are in flight, and checks old tokens keep verifying until their
// key's deletes_at while new ones are signed with the new key.
func TestContractIssueAndRotation(t *testing.T) {
	c := newContract(t)
	c.register(t, uuid.New())
	session, err := c.dev.SessionToken("alice")
	if err != nil {
		t.Fatal(err)
	}
	req := appurl.Request{AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"}
	issue := func(sessionToken string) primary.IssueResult {
		t.Helper()
		res, err := c.client.IssueSignedAppToken(context.Background(), primary.IssueTokenRequest{
			AppRequest: req, PathAppBaseURL: contractAccessURL, AppHostname: contractWildcard, AppPath: "/", SessionToken: sessionToken,
		}, "203.0.113.9")
		if err != nil {
			t.Fatalf("issue: %v", err)
		}
		return res
	}
	cache := primary.NewKeyCache(c.client, primary.KeyCacheOptions{Now: c.clock.Now, MinRefetchInterval: time.Nanosecond})
	if err := cache.Prime(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := &tokens.Verifier{Keys: cache, Now: c.clock.Now}

	before := issue(session)
	if before.Token == "" {
		t.Fatalf("issue with a session: relay %+v, want a token", before.Relay)
	}
	tok, err := v.VerifyToken(context.Background(), before.Token)
	if err != nil || !tok.MatchesRequest(req) || tok.UserID != aliceID || tok.AgentID != agentMain {
		t.Fatalf("issued token: %+v, %v", tok, err)
	}

	// Anonymous: the answer to relay, not an error.
	anon := issue("")
	if anon.Relay == nil || anon.Relay.Status != http.StatusSeeOther || !strings.Contains(anon.Relay.Header.Get("Location"), "/api/v2/applications/auth-redirect?redirect_uri=") {
		t.Fatalf("anonymous issue: %+v", anon.Relay)
	}

	// Rotate: the new key signs from now on; the client learns it on the
	// first unknown kid; the old token still verifies.
	old, _ := c.dev.SigningKey(tokens.FeatureAppToken)
	if err := c.dev.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	c.clock.Add(time.Second)
	after := issue(session)
	if _, err := (&tokens.Verifier{Keys: cache, Now: c.clock.Now}).VerifyToken(context.Background(), after.Token); err != nil {
		t.Fatalf("token signed after the rotation (new kid, fetched on demand): %v", err)
	}
	if newKey, _ := c.dev.SigningKey(tokens.FeatureAppToken); newKey.Sequence == old.Sequence {
		t.Fatalf("RotateKeys did not change the signing key")
	}
	if _, err := (&tokens.Verifier{Keys: cache, Now: c.clock.Now}).VerifyToken(context.Background(), before.Token); err != nil {
		t.Fatalf("a token from before the rotation must verify until its key is deleted: %v", err)
	}

	// Once the old key's deletes_at has passed (and the cache refreshed),
	// tokens signed with it are refused even if not expired by their own
	// clock: verify with a token whose exp is far ahead.
	keys, err := c.client.CryptoKeys(context.Background(), tokens.FeatureAppToken)
	if err != nil {
		t.Fatal(err)
	}
	var deletesAt time.Time
	for _, k := range keys {
		if k.Sequence == old.Sequence {
			deletesAt = k.DeletesAt
		}
	}
	if deletesAt.IsZero() {
		t.Fatalf("the rotated key has no deletes_at")
	}
	long := tok
	long.Expiry = deletesAt.Add(time.Hour)
	longTok, err := tokens.SignToken(old, long)
	if err != nil {
		t.Fatal(err)
	}
	c.clock.Set(deletesAt.Add(time.Second))
	if _, err := (&tokens.Verifier{Keys: cache, Now: c.clock.Now}).VerifyToken(context.Background(), longTok); err == nil {
		t.Fatalf("a key past its deletes_at still verifies")
	}
}

func TestContractResolveAppOwnerAndStats(t *testing.T) {
	c := newContract(t)
	req := appurl.Request{AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"}
	owner, err := c.client.ResolveAppOwner(context.Background(), req)
	if err != nil || owner != aliceID {
		t.Fatalf("owner %s, %v; want alice", owner, err)
	}
	missing := req
	missing.AppSlugOrPort = "nope"
	_, err = c.client.ResolveAppOwner(context.Background(), missing)
	wantError(t, err, http.StatusNotFound, "Application not found.")
	path := req
	path.AccessMethod, path.BasePath = appurl.AccessMethodPath, "/@alice/dev.main/apps/code/"
	_, err = c.client.ResolveAppOwner(context.Background(), path)
	wantError(t, err, http.StatusBadRequest, "Invalid access method.")

	start := c.clock.Now().Add(-time.Minute)
	report := primary.StatsReport{
		UserID: aliceID, WorkspaceID: uuid.MustParse("5d1b7c3e-9a4f-4e8e-8d2a-de0000000001"), AgentID: agentMain,
		AccessMethod: appurl.AccessMethodSubdomain, SlugOrPort: "code", SessionID: uuid.New(),
		SessionStartedAt: start, SessionEndedAt: start.Add(time.Second), Requests: 3,
	}
	if err := c.client.ReportAppStats(context.Background(), []primary.StatsReport{report}); err != nil {
		t.Fatalf("app-stats: %v", err)
	}
	got := c.dev.AppStats()
	if len(got) != 1 || got[0].SessionID != report.SessionID || got[0].Requests != 3 || got[0].SlugOrPort != "code" || !got[0].SessionStartedAt.Equal(start) {
		t.Fatalf("the primary kept %+v", got)
	}
}
