package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/tokens"
)

// rlUserID is the user ID the stack's authz emits for a user name.
func rlUserID(name string) uuid.UUID { return uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)) }

// warmCookie is a token cookie for alice's path app code owned by user,
// which Envoy's fast path verifies.
func (f *rlFakes) warmCookie(t *testing.T, user string) http.Header {
	t.Helper()
	raw, err := tokens.SignToken(f.tokenKey, tokens.SignedToken{
		Request: appurl.Request{AccessMethod: appurl.AccessMethodPath, BasePath: "/@alice/dev.main/apps/code/",
			UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"},
		UserID: rlUserID(user), AgentID: uuid.New(), WorkspaceID: uuid.New(), AppURL: "http://127.0.0.1:8080",
		Expiry: time.Now().Add(time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	return http.Header{"Cookie": {tokens.SignedAppTokenCookie + "=" + raw}}
}

// rlUserHeader names the user the rate-limit test's authz allows as; it is
// one of the headers Envoy sends to ext_authz. Without it the request is
// allowed with no user metadata, as authz allows non-app requests.
const rlUserHeader = "Coder-Session-Token"

// rlBusyBody is a 429 page authz relays from the primary.
const rlBusyBody = "<h1>primary says: slow down</h1>\n"

// rlAuthz allows everything; with rlUserHeader it emits the user's
// metadata as wsedge authz does (user_id and rate_limit_key).
type rlAuthz struct {
	authv3.UnimplementedAuthorizationServer
	checks atomic.Int64
}

func (a *rlAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.checks.Add(1)
	if strings.Contains(req.GetAttributes().GetRequest().GetHttp().GetPath(), "/busy/") {
		// As authz relays a primary's 429 verbatim.
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_UNAVAILABLE)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "content-type", Value: "text/html; charset=utf-8"}}},
				Body:    rlBusyBody,
			}},
		}, nil
	}
	if strings.Contains(req.GetAttributes().GetRequest().GetHttp().GetPath(), "/deny/") {
		// As authz sends an anonymous browser to log in.
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_SeeOther},
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "location", Value: "http://dashboard.wsedge.test/login"}}},
			}},
		}, nil
	}
	ok := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: edgewire.AppTokenHeader, Value: authzToken},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
	}
	if name := req.GetAttributes().GetRequest().GetHttp().GetHeaders()[strings.ToLower(rlUserHeader)]; name != "" {
		id := rlUserID(name).String()
		ok.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			edgewire.MetaUserID:       structpb.NewStringValue(id),
			edgewire.MetaRateLimitKey: structpb.NewStringValue(id),
		}}
	}
	return ok, nil
}

// countingOwners gives every app one owner and counts lookups (the
// preflight ext_proc asks for two per preflight).
type countingOwners struct{ lookups atomic.Int64 }

var rlOwner = uuid.MustParse("6a1c6f5e-7b0e-4c55-8d3c-1f0b3e0a9d11")

func (o *countingOwners) Owner(context.Context, appurl.Request) (uuid.UUID, error) {
	o.lookups.Add(1)
	return rlOwner, nil
}

// rlFakes are the rate-limit tests' stand-ins, which withRateLimitFakes
// fills in: the fake authz, the owner lookups of the real extproc, and the
// one app-token key of the JWKS Envoy's fast path verifies with.
type rlFakes struct {
	az       *rlAuthz
	owners   *countingOwners
	tokenKey tokens.Key
}

// withRateLimitFakes is real Envoy 1.40 with f's authz, the extproc
// processor (f's owners resolving), the echo upstream and f's JWKS; Envoy
// limits as rl says and trusts one X-Forwarded-For hop so that the test can
// speak for several client addresses from loopback.
func withRateLimitFakes(rl envoy.RateLimit, f *rlFakes) edgeOption {
	return func(s *edgeSetup) {
		f.az, f.owners = &rlAuthz{}, &countingOwners{}
		secret := make([]byte, 64)
		_, _ = rand.Read(secret)
		f.tokenKey = tokens.Key{Feature: tokens.FeatureAppToken, Secret: secret, Sequence: 1, StartsAt: time.Now().Add(-time.Hour)}
		WithAuthz(f.az, realExtProc(s.t, f.owners, nil))(s)
		WithUpstream(smokeUpstream(s.t))(s)
		WithJWKS(f.tokenKey)(s)
		WithEnvoy(func(c *envoy.Config) {
			c.XFFNumTrustedHops = 1
			c.RateLimit = rl
		})(s)
	}
}

// rlDo sends method url through h from client (X-Forwarded-For, trusted
// one hop deep) as user (none if empty).
func rlDo(t *testing.T, h *edge, method, url, client, user string, extra http.Header) (*http.Response, string) {
	t.Helper()
	hd := http.Header{}
	for k, v := range extra {
		hd[k] = v
	}
	if client != "" {
		hd.Set("X-Forwarded-For", client)
	}
	if user != "" {
		hd.Set(rlUserHeader, user)
	}
	return h.roundTrip(t, method, url, hd)
}

const (
	rlPathApp  = "http://" + accessHost + "/@alice/dev.main/apps/code/"
	rlSubApp   = "http://code--main--dev--alice.apps.wsedge.test/"
	rlTerminal = "http://" + accessHost + "/api/v2/workspaceagents/0d9a1b4e-4a57-4d62-9c51-8d3f0e1c2b3a/pty?reconnect=x"
	rlCatchAll = "http://" + accessHost + "/some/page"
)

// assertLimited checks a 429 as a client sees it: Retry-After in whole
// seconds until the next token (Envoy 1.40 answers 200 for 3 tokens per
// 10 minutes), Coder's JSON message.
func assertLimited(t *testing.T, resp *http.Response, body string, rl envoy.RateLimit) {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429 (body %q)", resp.StatusCode, body)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	refill := int(rl.Interval/time.Second) / int(rl.Requests)
	if err != nil || ra < refill/2 || ra > refill+1 {
		t.Errorf("Retry-After %q, want about one token's refill, %d seconds", resp.Header.Get("Retry-After"), refill)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var msg struct{ Message string }
	if err := json.Unmarshal([]byte(body), &msg); err != nil || msg.Message != "You've been rate limited for sending more than 3 requests in 10m0s." {
		t.Errorf("body %q (%v)", body, err)
	}
	if body != envoy.RateLimitMessage(rl) {
		t.Errorf("body %q, want %q", body, envoy.RateLimitMessage(rl))
	}
	if resp.Header.Get("X-Wsedge-App-Token") != "" {
		t.Error("internal header on a 429")
	}
}

func wantStatus(t *testing.T, what string, resp *http.Response, body string, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s: status %d, want %d (Retry-After %q, body %q)", what, resp.StatusCode, want, resp.Header.Get("Retry-After"), body)
	}
	if want != http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" {
		t.Errorf("%s: Retry-After %q on a %d", what, resp.Header.Get("Retry-After"), resp.StatusCode)
	}
}

// TestRateLimit runs real Envoy with the per-user limit on (3 requests,
// burst 3, per 10 minutes, so no token comes back during the test).
func TestRateLimit(t *testing.T) {
	rl := envoy.RateLimit{Requests: 3, Interval: 10 * time.Minute, MaxKeys: 100}
	f := &rlFakes{}
	st := startEdge(t, withRateLimitFakes(rl, f))

	t.Run("a user's budget spans app routes and terminals; another user is still served", func(t *testing.T) {
		// Alice spends her three tokens on three different routes, from
		// three different addresses.
		for i, url := range []string{rlPathApp, rlSubApp, rlTerminal} {
			resp, body := rlDo(t, st, "GET", url, "198.51.100."+strconv.Itoa(10+i), "alice", nil)
			wantStatus(t, url, resp, body, http.StatusOK)
		}
		before := f.az.checks.Load()
		resp, body := rlDo(t, st, "GET", rlPathApp, "198.51.100.13", "alice", nil)
		assertLimited(t, resp, body, rl)
		if f.az.checks.Load() != before+1 {
			t.Error("the limit must apply after ext_authz (which names the user)")
		}
		resp, body = rlDo(t, st, "GET", rlSubApp, "198.51.100.10", "alice", nil)
		assertLimited(t, resp, body, rl)

		// Bob, from one of Alice's addresses, has his own bucket.
		for range 3 {
			resp, body := rlDo(t, st, "GET", rlSubApp, "198.51.100.10", "bob", nil)
			wantStatus(t, "bob", resp, body, http.StatusOK)
		}
		resp, body = rlDo(t, st, "GET", rlSubApp, "198.51.100.10", "bob", nil)
		assertLimited(t, resp, body, rl)
	})

	t.Run("requests without a user are limited by client address", func(t *testing.T) {
		for range 3 {
			resp, body := rlDo(t, st, "GET", rlCatchAll, "203.0.113.7", "", nil)
			wantStatus(t, "anonymous", resp, body, http.StatusOK)
		}
		resp, body := rlDo(t, st, "GET", rlCatchAll, "203.0.113.7", "", nil)
		assertLimited(t, resp, body, rl)
		resp, body = rlDo(t, st, "GET", rlPathApp, "203.0.113.7", "", nil)
		assertLimited(t, resp, body, rl)
		// Another address is served; so is a user from the exhausted one.
		resp, body = rlDo(t, st, "GET", rlCatchAll, "203.0.113.8", "", nil)
		wantStatus(t, "other address", resp, body, http.StatusOK)
		resp, body = rlDo(t, st, "GET", rlCatchAll, "203.0.113.7", "carol", nil)
		wantStatus(t, "user from the exhausted address", resp, body, http.StatusOK)
	})

	t.Run("a user's requests do not spend their address's budget", func(t *testing.T) {
		for range 3 {
			resp, body := rlDo(t, st, "GET", rlPathApp, "203.0.113.20", "dave", nil)
			wantStatus(t, "dave", resp, body, http.StatusOK)
		}
		for range 3 {
			resp, body := rlDo(t, st, "GET", rlCatchAll, "203.0.113.20", "", nil)
			wantStatus(t, "anonymous beside dave", resp, body, http.StatusOK)
		}
	})

	t.Run("IPv6 clients share a bucket per /64", func(t *testing.T) {
		for _, ip := range []string{"2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::3"} {
			resp, body := rlDo(t, st, "GET", rlCatchAll, ip, "", nil)
			wantStatus(t, ip, resp, body, http.StatusOK)
		}
		resp, body := rlDo(t, st, "GET", rlCatchAll, "2001:db8:1:1::4", "", nil)
		assertLimited(t, resp, body, rl)
		resp, body = rlDo(t, st, "GET", rlCatchAll, "2001:db8:1:2::1", "", nil)
		wantStatus(t, "next /64", resp, body, http.StatusOK)
	})

	t.Run("probes, DERP and latency checks are never limited", func(t *testing.T) {
		for _, ip := range []string{"203.0.113.7", ""} { // exhausted above; the loopback peer
			for range 10 {
				for _, url := range []string{
					"http://" + accessHost + "/healthz",
					"http://" + accessHost + "/healthz-report",
					"http://" + accessHost + "/api/v2/buildinfo",
					"http://" + accessHost + "/latency-check",
					"http://" + accessHost + "/derp/latency-check",
					"http://code--main--dev--alice.apps.wsedge.test/latency-check",
					"http://10.0.0.1/healthz", // a load balancer probing by address
				} {
					resp, body := rlDo(t, st, "GET", url, ip, "", nil)
					wantStatus(t, url, resp, body, http.StatusOK)
				}
			}
		}
		// The loopback peer has made 70 unlimited requests and still has
		// its whole budget for checked ones.
		for range 3 {
			resp, body := rlDo(t, st, "GET", rlCatchAll, "", "", nil)
			wantStatus(t, "loopback after probes", resp, body, http.StatusOK)
		}
	})

	t.Run("a 429 authz relays keeps its own body", func(t *testing.T) {
		resp, body := rlDo(t, st, "GET", "http://"+accessHost+"/@erin/busy/apps/code/", "203.0.113.30", "", nil)
		if resp.StatusCode != http.StatusTooManyRequests || body != rlBusyBody || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("status %d, Content-Type %q, body %q; want authz's own 429", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	})

	t.Run("preflights before ext_authz are limited by client address", func(t *testing.T) {
		preflight := http.Header{
			"Origin":                        {"http://term--main--dev--alice.apps.wsedge.test"},
			"Access-Control-Request-Method": {"POST"},
		}
		for range 3 {
			resp, body := rlDo(t, st, "OPTIONS", rlSubApp, "198.51.100.50", "", preflight)
			wantStatus(t, "preflight", resp, body, http.StatusOK)
			if resp.Header.Get("Access-Control-Allow-Origin") != preflight.Get("Origin") {
				t.Fatalf("preflight not answered by ext_proc: %v", resp.Header)
			}
		}
		lookups, checks := f.owners.lookups.Load(), f.az.checks.Load()
		resp, body := rlDo(t, st, "OPTIONS", rlSubApp, "198.51.100.50", "", preflight)
		assertLimited(t, resp, body, rl)
		if got := f.owners.lookups.Load(); got != lookups {
			t.Errorf("a limited preflight still cost %d owner lookups", got-lookups)
		}
		if f.az.checks.Load() != checks {
			t.Error("a limited preflight reached ext_authz")
		}
		resp, body = rlDo(t, st, "OPTIONS", rlSubApp, "198.51.100.51", "", preflight)
		wantStatus(t, "preflight from another address", resp, body, http.StatusOK)
	})
}

// TestRateLimitFastPath: a request Envoy's fast path verified (no
// ext_authz) draws from its user's bucket, the one authz's rate_limit_key
// names on the cold path, and not from its client address's bucket.
func TestRateLimitFastPath(t *testing.T) {
	rl := envoy.RateLimit{Requests: 3, Interval: 10 * time.Minute, MaxKeys: 100}
	f := &rlFakes{}
	st := startEdge(t, withRateLimitFakes(rl, f))

	// Alice: one cold request (authz names her), two warm ones, then
	// her bucket is empty whichever path the next takes.
	resp, body := rlDo(t, st, "GET", rlPathApp, "198.51.100.50", "alice", nil)
	wantStatus(t, "cold", resp, body, http.StatusOK)
	before := f.az.checks.Load()
	for i := range 2 {
		resp, body := rlDo(t, st, "GET", rlPathApp, "198.51.100.50", "", f.warmCookie(t, "alice"))
		wantStatus(t, "warm "+strconv.Itoa(i), resp, body, http.StatusOK)
	}
	if f.az.checks.Load() != before {
		t.Fatalf("warm requests reached authz (%d checks)", f.az.checks.Load()-before)
	}
	resp, body = rlDo(t, st, "GET", rlPathApp, "198.51.100.51", "", f.warmCookie(t, "alice"))
	assertLimited(t, resp, body, rl)
	resp, body = rlDo(t, st, "GET", rlPathApp, "198.51.100.52", "alice", nil)
	assertLimited(t, resp, body, rl)

	// Carol's warm requests leave her address's anonymous bucket full.
	for i := range 3 {
		resp, body := rlDo(t, st, "GET", rlPathApp, "198.51.100.60", "", f.warmCookie(t, "carol"))
		wantStatus(t, "carol warm "+strconv.Itoa(i), resp, body, http.StatusOK)
	}
	for i := range 3 {
		resp, body := rlDo(t, st, "GET", rlCatchAll, "198.51.100.60", "", nil)
		wantStatus(t, "anonymous after carol "+strconv.Itoa(i), resp, body, http.StatusOK)
	}
}

// TestRateLimitBeforeAuthz runs real Envoy with the per-client limiter in
// front of ext_authz as well (3 requests per 10 minutes): requests authz
// denies count, a limited request never reaches authz, users behind one
// address share its budget, probes are never counted, and the preflights
// ext_proc answers spend only the preflight budget.
func TestRateLimitBeforeAuthz(t *testing.T) {
	rl := envoy.RateLimit{Requests: 3, Interval: 10 * time.Minute, MaxKeys: 100, BeforeAuthz: true}
	f := &rlFakes{}
	st := startEdge(t, withRateLimitFakes(rl, f))
	denied := "http://" + accessHost + "/@alice/deny/apps/code/"

	t.Run("requests authz denies are counted; a limited one never reaches authz", func(t *testing.T) {
		for range 3 {
			resp, body := rlDo(t, st, "GET", denied, "203.0.113.40", "", nil)
			wantStatus(t, "denied", resp, body, http.StatusSeeOther)
		}
		checks := f.az.checks.Load()
		resp, body := rlDo(t, st, "GET", denied, "203.0.113.40", "", nil)
		assertLimited(t, resp, body, rl)
		resp, body = rlDo(t, st, "GET", rlPathApp, "203.0.113.40", "mallory", nil)
		assertLimited(t, resp, body, rl)
		if got := f.az.checks.Load(); got != checks {
			t.Errorf("%d limited requests reached ext_authz", got-checks)
		}
		resp, body = rlDo(t, st, "GET", denied, "203.0.113.41", "", nil)
		wantStatus(t, "another address", resp, body, http.StatusSeeOther)
	})

	t.Run("users behind one address share its budget", func(t *testing.T) {
		for _, user := range []string{"frank", "frank", "gina"} {
			resp, body := rlDo(t, st, "GET", rlSubApp, "203.0.113.50", user, nil)
			wantStatus(t, user, resp, body, http.StatusOK)
		}
		// Gina has two of her own tokens left, the address none.
		resp, body := rlDo(t, st, "GET", rlSubApp, "203.0.113.50", "gina", nil)
		assertLimited(t, resp, body, rl)
		resp, body = rlDo(t, st, "GET", rlSubApp, "203.0.113.51", "gina", nil)
		wantStatus(t, "gina from another address", resp, body, http.StatusOK)
	})

	t.Run("probes are never limited; answered preflights spend only the preflight budget", func(t *testing.T) {
		for range 5 {
			resp, body := rlDo(t, st, "GET", "http://"+accessHost+"/healthz", "203.0.113.40", "", nil)
			if resp.StatusCode == http.StatusTooManyRequests {
				t.Fatalf("probe limited: %q", body)
			}
		}
		preflight := http.Header{
			"Origin":                        {"http://term--main--dev--alice.apps.wsedge.test"},
			"Access-Control-Request-Method": {"POST"},
		}
		for range 3 {
			resp, body := rlDo(t, st, "OPTIONS", rlSubApp, "198.51.100.60", "", preflight)
			wantStatus(t, "preflight", resp, body, http.StatusOK)
		}
		// The preflights spent the preflight budget, not the address's.
		resp, body := rlDo(t, st, "GET", rlSubApp, "198.51.100.60", "hank", nil)
		wantStatus(t, "GET after three preflights", resp, body, http.StatusOK)
		resp, body = rlDo(t, st, "OPTIONS", rlSubApp, "198.51.100.60", "", preflight)
		assertLimited(t, resp, body, rl)
	})
}

// TestRateLimitOff is the default: nothing is limited and no rate limit
// header appears.
func TestRateLimitOff(t *testing.T) {
	f := &rlFakes{}
	st := startEdge(t, withRateLimitFakes(envoy.DefaultConfig().RateLimit, f))
	preflight := http.Header{
		"Origin":                        {"http://term--main--dev--alice.apps.wsedge.test"},
		"Access-Control-Request-Method": {"POST"},
	}
	for i := range 30 {
		for _, r := range []struct{ method, url, user string }{
			{"GET", rlPathApp, "alice"},
			{"GET", rlSubApp, "alice"},
			{"GET", rlTerminal, "alice"},
			{"GET", rlCatchAll, ""},
			{"OPTIONS", rlSubApp, ""},
		} {
			var extra http.Header
			if r.method == "OPTIONS" {
				extra = preflight
			}
			resp, body := rlDo(t, st, r.method, r.url, "203.0.113.7", r.user, extra)
			wantStatus(t, r.method+" "+r.url+" #"+strconv.Itoa(i), resp, body, http.StatusOK)
			for k := range resp.Header {
				if strings.HasPrefix(strings.ToLower(k), "x-ratelimit") {
					t.Fatalf("%s header with rate limiting off", k)
				}
			}
		}
	}
}
