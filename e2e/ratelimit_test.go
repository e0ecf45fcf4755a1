package e2e

import (
	"context"
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
	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/envoy"
)

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
				Header:       &corev3.HeaderValue{Key: "x-wsedge-app-token", Value: authzToken},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
	}
	if name := req.GetAttributes().GetRequest().GetHttp().GetHeaders()[strings.ToLower(rlUserHeader)]; name != "" {
		id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String()
		ok.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			"user_id":        structpb.NewStringValue(id),
			"rate_limit_key": structpb.NewStringValue(id),
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

// withRateLimitFakes is real Envoy 1.40 with az, the extproc processor
// (owners resolving) and the echo upstream; Envoy limits as rl says and
// trusts one X-Forwarded-For hop so that the test can speak for several
// client addresses from loopback.
func withRateLimitFakes(rl envoy.RateLimit, az *rlAuthz, owners *countingOwners) edgeOption {
	return func(s *edgeSetup) {
		WithAuthz(az, realExtProc(s.t, owners, nil))(s)
		WithUpstream(smokeUpstream(s.t))(s)
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
	az, owners := &rlAuthz{}, &countingOwners{}
	st := startEdge(t, withRateLimitFakes(rl, az, owners))

	t.Run("a user's budget spans app routes and terminals; another user is still served", func(t *testing.T) {
		// Alice spends her three tokens on three different routes, from
		// three different addresses.
		for i, url := range []string{rlPathApp, rlSubApp, rlTerminal} {
			resp, body := rlDo(t, st, "GET", url, "198.51.100."+strconv.Itoa(10+i), "alice", nil)
			wantStatus(t, url, resp, body, http.StatusOK)
		}
		before := az.checks.Load()
		resp, body := rlDo(t, st, "GET", rlPathApp, "198.51.100.13", "alice", nil)
		assertLimited(t, resp, body, rl)
		if az.checks.Load() != before+1 {
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
		lookups, checks := owners.lookups.Load(), az.checks.Load()
		resp, body := rlDo(t, st, "OPTIONS", rlSubApp, "198.51.100.50", "", preflight)
		assertLimited(t, resp, body, rl)
		if got := owners.lookups.Load(); got != lookups {
			t.Errorf("a limited preflight still cost %d owner lookups", got-lookups)
		}
		if az.checks.Load() != checks {
			t.Error("a limited preflight reached ext_authz")
		}
		resp, body = rlDo(t, st, "OPTIONS", rlSubApp, "198.51.100.51", "", preflight)
		wantStatus(t, "preflight from another address", resp, body, http.StatusOK)
	})
}

// TestRateLimitBeforeAuthz runs real Envoy with the per-client limiter in
// front of ext_authz as well (3 requests per 10 minutes): requests authz
// denies count, a limited request never reaches authz, users behind one
// address share its budget, probes are never counted, and the preflights
// ext_proc answers spend only the preflight budget.
func TestRateLimitBeforeAuthz(t *testing.T) {
	rl := envoy.RateLimit{Requests: 3, Interval: 10 * time.Minute, MaxKeys: 100, BeforeAuthz: true}
	az, owners := &rlAuthz{}, &countingOwners{}
	st := startEdge(t, withRateLimitFakes(rl, az, owners))
	denied := "http://" + accessHost + "/@alice/deny/apps/code/"

	t.Run("requests authz denies are counted; a limited one never reaches authz", func(t *testing.T) {
		for range 3 {
			resp, body := rlDo(t, st, "GET", denied, "203.0.113.40", "", nil)
			wantStatus(t, "denied", resp, body, http.StatusSeeOther)
		}
		checks := az.checks.Load()
		resp, body := rlDo(t, st, "GET", denied, "203.0.113.40", "", nil)
		assertLimited(t, resp, body, rl)
		resp, body = rlDo(t, st, "GET", rlPathApp, "203.0.113.40", "mallory", nil)
		assertLimited(t, resp, body, rl)
		if got := az.checks.Load(); got != checks {
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
	az, owners := &rlAuthz{}, &countingOwners{}
	st := startEdge(t, withRateLimitFakes(envoy.DefaultConfig().RateLimit, az, owners))
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

// TestRateLimitKeysMatchAuthz ties the generated descriptors to what wsedge
// authz emits on allow: the rlAuthz stand-in above uses the same names.
func TestRateLimitKeysMatchAuthz(t *testing.T) {
	if envoy.RateLimitMetadataKey != authz.MetaRateLimitKey {
		t.Errorf("envoy reads metadata %q, authz emits %q", envoy.RateLimitMetadataKey, authz.MetaRateLimitKey)
	}
	if authz.MetaUserID != "user_id" || authz.MetaRateLimitKey != "rate_limit_key" {
		t.Errorf("authz metadata keys %q/%q differ from the ones this test's authz emits", authz.MetaUserID, authz.MetaRateLimitKey)
	}
	if envoy.ExtAuthzFilter != "envoy.filters.http.ext_authz" {
		t.Errorf("metadata namespace %q", envoy.ExtAuthzFilter)
	}
}
