package extproc

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
)

const testWildcard = "*.apps.example.com"

var (
	alice = uuid.MustParse("0a11ce00-0000-4000-8000-000000000001")
	bob   = uuid.MustParse("0b0b0000-0000-4000-8000-000000000002")
)

// fakeOwners resolves apps by their user part; "broken" fails.
type fakeOwners struct {
	mu    sync.Mutex
	calls []appurl.Request
}

var errPrimaryDown = errors.New("primary unreachable")

func (f *fakeOwners) Owner(_ context.Context, r appurl.Request) (uuid.UUID, error) {
	f.mu.Lock()
	f.calls = append(f.calls, r)
	f.mu.Unlock()
	switch r.UsernameOrID {
	case "alice":
		return alice, nil
	case "bob":
		return bob, nil
	case "broken":
		return uuid.Nil, errPrimaryDown
	}
	return uuid.Nil, errors.New("application not found")
}

func testPolicy(t *testing.T) (*policy, *fakeOwners) {
	t.Helper()
	p, err := appurl.CompileHostnamePattern(testWildcard)
	if err != nil {
		t.Fatal(err)
	}
	o := &fakeOwners{}
	return &policy{wildcard: p, owners: o}, o
}

// apply mutates h as Envoy does: every removal first, then the sets in
// order.
func apply(h http.Header, m Mutation) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	for _, k := range m.Remove {
		out.Del(k)
	}
	for _, op := range m.Set {
		if op.Append {
			out.Add(op.Key, op.Value)
		} else {
			out.Set(op.Key, op.Value)
		}
	}
	return out
}

var (
	simpleApp   = AppInfo{Known: true, AccessMethod: appurl.AccessMethodSubdomain, CORSBehavior: "simple", Owner: alice}
	passthruApp = AppInfo{Known: true, AccessMethod: appurl.AccessMethodSubdomain, CORSBehavior: "passthru", Owner: alice}
	pathApp     = AppInfo{Known: true, AccessMethod: appurl.AccessMethodPath, CORSBehavior: "simple", Owner: alice}
)

const (
	aliceOrigin  = "https://web--main--dev--alice.apps.example.com"
	bobOrigin    = "https://web--main--dev--bob.apps.example.com"
	targetHost   = "api--main--dev--alice.apps.example.com"
	evilOrigin   = "https://evil.example.net"
	brokenOrigin = "https://web--main--dev--broken.apps.example.com"
)

func preflight(origin, method, headers string, app AppInfo) *Exchange {
	return &Exchange{Method: "OPTIONS", Host: targetHost, Origin: origin, ReqMethod: method, ReqHeaders: headers, App: app}
}

func TestAfterAuthzPreflight(t *testing.T) {
	vary := []string{"Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"}
	tests := []struct {
		name        string
		ex          *Exchange
		wantAnswer  bool
		wantAllowed bool
		wantOutcome string
	}{
		{"same owner", preflight(aliceOrigin, "put", "content-type, x-requested-with", simpleApp), true, true, outcomePreflightAllowed},
		{"same owner, origin with port", preflight(aliceOrigin+":8443", "GET", "", simpleApp), true, true, outcomePreflightAllowed},
		{"other owner", preflight(bobOrigin, "PUT", "", simpleApp), true, false, outcomePreflightRefused},
		{"random site", preflight(evilOrigin, "PUT", "", simpleApp), true, false, outcomePreflightRefused},
		{"null origin", preflight("null", "PUT", "", simpleApp), true, false, outcomePreflightRefused},
		{"no origin", preflight("", "PUT", "", simpleApp), true, false, outcomePreflightRefused},
		{"method not allowed", preflight(aliceOrigin, "PROPFIND", "", simpleApp), true, false, outcomePreflightRefused},
		{"owner lookup fails", preflight(brokenOrigin, "PUT", "", simpleApp), true, false, outcomeOwnerLookupFailed},
		{"target owner unknown", preflight(aliceOrigin, "PUT", "", AppInfo{Known: true, AccessMethod: appurl.AccessMethodSubdomain, CORSBehavior: "simple"}), true, false, outcomePreflightRefused},
		{"passthru goes to the app", preflight(aliceOrigin, "PUT", "", passthruApp), false, false, outcomePreflightToApp},
		{"path app goes on", preflight(aliceOrigin, "PUT", "", pathApp), false, false, outcomeContinue},
		{"no metadata goes on", preflight(aliceOrigin, "PUT", "", AppInfo{}), false, false, outcomeContinue},
		{"plain OPTIONS goes on", &Exchange{Method: "OPTIONS", Host: targetHost, Origin: aliceOrigin, App: simpleApp}, false, false, outcomeContinue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testPolicy(t)
			d := p.afterAuthzRequest(context.Background(), tt.ex)
			if d.Outcome != tt.wantOutcome {
				t.Errorf("outcome %q, want %q", d.Outcome, tt.wantOutcome)
			}
			if (d.Immediate != nil) != tt.wantAnswer {
				t.Fatalf("answered %v, want %v", d.Immediate != nil, tt.wantAnswer)
			}
			if d.Immediate == nil {
				return
			}
			if d.Immediate.Status != http.StatusOK {
				t.Errorf("status %d, want 200 (go-chi/cors answers every preflight with 200)", d.Immediate.Status)
			}
			h := d.Immediate.Header
			if got := h.Values("Vary"); !slices.Equal(got, vary) {
				t.Errorf("Vary %q, want %q", got, vary)
			}
			if !tt.wantAllowed {
				for _, k := range []string{hdrACAO, hdrACAC, hdrACAM, hdrACAH} {
					if h.Get(k) != "" {
						t.Errorf("refused preflight carries %s: %q", k, h.Get(k))
					}
				}
				return
			}
			if got := h.Get(hdrACAO); got != tt.ex.Origin {
				t.Errorf("ACAO %q, want %q", got, tt.ex.Origin)
			}
			if got := h.Get(hdrACAC); got != "true" {
				t.Errorf("ACAC %q", got)
			}
			if got := h.Get(hdrACAM); got != strings.ToUpper(tt.ex.ReqMethod) {
				t.Errorf("ACAM %q", got)
			}
			wantHeaders := ""
			if tt.ex.ReqHeaders != "" {
				wantHeaders = "Content-Type, X-Requested-With"
			}
			if got := h.Get(hdrACAH); got != wantHeaders {
				t.Errorf("ACAH %q, want %q", got, wantHeaders)
			}
			if h.Get("Access-Control-Max-Age") != "" {
				t.Error("Max-Age set; coderd sets none")
			}
		})
	}
}

func TestBeforeAuthzPreflight(t *testing.T) {
	tests := []struct {
		name        string
		ex          *Exchange
		passthru    bool
		wantAnswer  bool
		wantOutcome string
		wantLookups int
	}{
		{"same owner answered", preflight(aliceOrigin, "DELETE", "authorization", AppInfo{}), false, true, outcomePreflightAllowed, 2},
		{"other owner goes to authz", preflight(bobOrigin, "DELETE", "", AppInfo{}), false, false, outcomePreflightToAuthz, 2},
		{"random site goes to authz", preflight(evilOrigin, "DELETE", "", AppInfo{}), false, false, outcomePreflightToAuthz, 0},
		{"method not allowed goes to authz", preflight(aliceOrigin, "PROPFIND", "", AppInfo{}), false, false, outcomePreflightToAuthz, 0},
		{"remembered passthru goes to authz", preflight(aliceOrigin, "DELETE", "", AppInfo{}), true, false, outcomePreflightToAuthz, 0},
		{"lookup failure goes to authz", preflight(brokenOrigin, "DELETE", "", AppInfo{}), false, false, outcomeOwnerLookupFailed, 2},
		{"not a preflight goes to authz", &Exchange{Method: "GET", Host: targetHost, Origin: aliceOrigin}, false, false, outcomePreflightToAuthz, 0},
		{"target not an app goes to authz", &Exchange{Method: "OPTIONS", Host: "proxy.example.com", Origin: aliceOrigin, ReqMethod: "GET"}, false, false, outcomePreflightToAuthz, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, owners := testPolicy(t)
			mem := newBehaviorMemory(time.Now, time.Minute, 10)
			if tt.passthru {
				target, _ := hostApp(p.wildcard, targetHost)
				mem.record(target, true)
			}
			d := p.beforeAuthzRequest(context.Background(), tt.ex, mem)
			if d.Outcome != tt.wantOutcome {
				t.Errorf("outcome %q, want %q", d.Outcome, tt.wantOutcome)
			}
			if (d.Immediate != nil) != tt.wantAnswer {
				t.Fatalf("answered %v, want %v", d.Immediate != nil, tt.wantAnswer)
			}
			if len(owners.calls) != tt.wantLookups {
				t.Errorf("%d owner lookups, want %d", len(owners.calls), tt.wantLookups)
			}
			if d.Immediate != nil {
				h := d.Immediate.Header
				if h.Get(hdrACAO) != tt.ex.Origin || h.Get(hdrACAC) != "true" || h.Get(hdrACAM) != "DELETE" || h.Get(hdrACAH) != "Authorization" {
					t.Errorf("answer headers %v", h)
				}
			}
		})
	}
}

func TestBeforeAuthzLooksUpBothApps(t *testing.T) {
	p, owners := testPolicy(t)
	mem := newBehaviorMemory(time.Now, time.Minute, 10)
	p.beforeAuthzRequest(context.Background(), preflight("https://x---web--main--dev--alice.apps.example.com", "GET", "", AppInfo{}), mem)
	want := []appurl.Request{
		{AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "api"},
		{AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", Prefix: "x---", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "web"},
	}
	slices.SortFunc(owners.calls, func(a, b appurl.Request) int { return strings.Compare(a.Prefix, b.Prefix) })
	if !slices.Equal(owners.calls, want) {
		t.Fatalf("lookups %+v, want %+v", owners.calls, want)
	}
	for _, r := range owners.calls {
		if err := r.Check(); err != nil {
			t.Errorf("lookup request %+v fails coderd's check: %v", r, err)
		}
	}
}

func TestResponse(t *testing.T) {
	appCORS := http.Header{
		"Access-Control-Allow-Origin":      {"*"},
		"Access-Control-Allow-Credentials": {"true"},
		"Access-Control-Allow-Methods":     {"GET"},
		"Access-Control-Allow-Headers":     {"X-App"},
		"Access-Control-Expose-Headers":    {"X-Kept"},
		"Vary":                             {"Origin, Accept-Encoding", "access-control-request-headers"},
		"Content-Type":                     {"text/plain"},
	}
	tests := []struct {
		name        string
		ex          *Exchange
		in          http.Header
		want        http.Header // headers that must be exactly so (nil: absent)
		wantOutcome string
	}{
		{
			name: "simple, same-owner origin",
			ex:   &Exchange{Method: "GET", Host: targetHost, Origin: aliceOrigin, App: simpleApp},
			in:   appCORS,
			want: http.Header{
				"Access-Control-Allow-Origin":      {aliceOrigin},
				"Access-Control-Allow-Credentials": {"true"},
				"Access-Control-Allow-Methods":     nil,
				"Access-Control-Allow-Headers":     nil,
				"Access-Control-Expose-Headers":    {"X-Kept"},
				"Vary":                             {"Origin", "Accept-Encoding"},
				"Content-Type":                     {"text/plain"},
				"X-Content-Type-Options":           nil,
			},
			wantOutcome: outcomeCORSAllowed,
		},
		{
			name: "simple, other owner's origin",
			ex:   &Exchange{Method: "POST", Host: targetHost, Origin: bobOrigin, App: simpleApp},
			in:   appCORS,
			want: http.Header{
				"Access-Control-Allow-Origin":      nil,
				"Access-Control-Allow-Credentials": nil,
				"Vary":                             {"Origin", "Accept-Encoding"},
			},
			wantOutcome: outcomeCORSNotAllowed,
		},
		{
			name: "simple, method outside the allowed set",
			ex:   &Exchange{Method: "PROPFIND", Host: targetHost, Origin: aliceOrigin, App: simpleApp},
			in:   appCORS,
			want: http.Header{"Access-Control-Allow-Origin": nil},
		},
		{
			name:        "simple, no origin",
			ex:          &Exchange{Method: "GET", Host: targetHost, App: simpleApp},
			in:          http.Header{"Vary": {"Accept-Encoding"}},
			want:        http.Header{"Vary": {"Origin", "Accept-Encoding"}, "Access-Control-Allow-Origin": nil},
			wantOutcome: outcomeStripped,
		},
		{
			name:        "passthru keeps everything",
			ex:          &Exchange{Method: "GET", Host: targetHost, Origin: bobOrigin, App: passthruApp},
			in:          appCORS,
			want:        appCORS,
			wantOutcome: outcomePassthru,
		},
		{
			name: "path app stripped, nosniff",
			ex:   &Exchange{Method: "GET", Origin: aliceOrigin, App: pathApp},
			in:   appCORS,
			want: http.Header{
				"Access-Control-Allow-Origin": nil,
				"Vary":                        {"Origin", "Accept-Encoding"},
				"X-Content-Type-Options":      {"nosniff"},
			},
			wantOutcome: outcomeStripped,
		},
		{
			name:        "path app, app's own sniff header replaced",
			ex:          &Exchange{Method: "GET", App: pathApp},
			in:          http.Header{"X-Content-Type-Options": {"bogus"}},
			want:        http.Header{"X-Content-Type-Options": {"nosniff"}, "Vary": {"Origin"}},
			wantOutcome: outcomeStripped,
		},
		{
			name: "no metadata: path-app semantics",
			ex:   &Exchange{Method: "GET", Host: targetHost, Origin: aliceOrigin},
			in:   appCORS,
			want: http.Header{
				"Access-Control-Allow-Origin": nil,
				"Vary":                        {"Origin", "Accept-Encoding"},
				"X-Content-Type-Options":      {"nosniff"},
			},
			wantOutcome: outcomeNoMetadata,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testPolicy(t)
			d := p.response(context.Background(), tt.ex, tt.in)
			if tt.wantOutcome != "" && d.Outcome != tt.wantOutcome {
				t.Errorf("outcome %q, want %q", d.Outcome, tt.wantOutcome)
			}
			got := apply(tt.in, d.Mutation)
			for k, want := range tt.want {
				if g := got.Values(k); !slices.Equal(g, want) {
					t.Errorf("%s = %q, want %q", k, g, want)
				}
			}
		})
	}
}

func TestResponseCoderCookies(t *testing.T) {
	in := http.Header{"Set-Cookie": {
		"session=app; Path=/",
		"coder_signed_app_token=x; Path=/",
		"coder_session_token=stolen; Domain=.example.com; Path=/; HttpOnly",
		" coder_subdomain_app_session_token_0123abcd =y",
		"__Host-coder_session_token=z; Secure; Path=/",
		"coder_path_app_session_token=; Max-Age=0",
		"theme=dark",
		"oauth_state=s",
		// Nameless cookies: a browser stores the value under the empty
		// name and sends it back as "coder_signed_app_token=x", shadowing
		// the real cookie.
		"=coder_signed_app_token=x; Domain=apps.example.com; Path=/",
		"=coder_subdomain_app_session_token_0123abcd=y; Domain=apps.example.com",
		" = coder_session_token=z",
		"=plain",
		// No '=' before the first ';': nameless too, even with a
		// Coder-looking name and an '=' in an attribute.
		"coder_session_token; Path=/=",
	}}
	for _, app := range []AppInfo{simpleApp, passthruApp, pathApp, {}} {
		p, _ := testPolicy(t)
		d := p.response(context.Background(), &Exchange{Method: "GET", Host: targetHost, App: app}, in)
		if d.CoderCookiesRemoved != 11 {
			t.Errorf("%+v: removed %d, want 11", app, d.CoderCookiesRemoved)
		}
		got := apply(in, d.Mutation).Values("Set-Cookie")
		if want := []string{"session=app; Path=/", "theme=dark"}; !slices.Equal(got, want) {
			t.Errorf("%+v: Set-Cookie %q, want %q", app, got, want)
		}
	}
	p, _ := testPolicy(t)
	d := p.response(context.Background(), &Exchange{App: passthruApp}, http.Header{"Set-Cookie": {"a=1", "b=2"}})
	if !d.Mutation.empty() {
		t.Errorf("passthru response without Coder cookies mutated: %+v", d.Mutation)
	}
}

func TestParseHeaderList(t *testing.T) {
	for in, want := range map[string][]string{
		"":                              nil,
		"content-type":                  {"Content-Type"},
		"X-REQUESTED-WITH, accept":      {"X-Requested-With", "Accept"},
		"a,,b  c":                       {"A", "B", "C"},
		"x_custom-h2, x.dot":            {"X_custom-H2", "Xdot"},
		"  authorization  ":             {"Authorization"},
		"content-type,x-wsedge-forged!": {"Content-Type", "X-Wsedge-Forged"},
	} {
		if got := parseHeaderList(in); !slices.Equal(got, want) {
			t.Errorf("parseHeaderList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCleanVary(t *testing.T) {
	tests := []struct {
		in, want []string
		changed  bool
	}{
		{nil, nil, false},
		{[]string{"Accept-Encoding"}, []string{"Accept-Encoding"}, false},
		{[]string{"Origin, Accept-Encoding"}, []string{"Accept-Encoding"}, true},
		{[]string{"origin", "Cookie"}, []string{"Cookie"}, true},
		{[]string{"Access-Control-Request-Methods, ACCESS-CONTROL-REQUEST-METHOD, Access-Control-Request-Headers"}, nil, true},
		{[]string{"*"}, []string{"*"}, false},
		{[]string{"Accept,User-Agent"}, []string{"Accept, User-Agent"}, true},
	}
	for _, tt := range tests {
		got, changed := cleanVary(tt.in)
		if !slices.Equal(got, tt.want) || changed != tt.changed {
			t.Errorf("cleanVary(%q) = %q, %v; want %q, %v", tt.in, got, changed, tt.want, tt.changed)
		}
	}
}

func TestBehaviorMemory(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newBehaviorMemory(func() time.Time { return now }, time.Minute, 2)
	app := func(user string) appurl.Request { return appurl.Request{UsernameOrID: user, AppSlugOrPort: "web"} }

	m.record(app("a"), true)
	if !m.passthru(app("a")) || m.passthru(app("b")) {
		t.Fatal("passthru not remembered for a alone")
	}
	m.record(app("a"), false)
	if m.passthru(app("a")) {
		t.Fatal("switch back to simple not noticed")
	}
	m.record(app("a"), true)
	now = now.Add(30 * time.Second)
	m.record(app("b"), true)
	m.record(app("c"), true) // full: the entry closest to expiry (a) goes
	if m.size() != 2 || m.passthru(app("a")) || !m.passthru(app("b")) || !m.passthru(app("c")) {
		t.Fatalf("eviction wrong: size %d", m.size())
	}
	now = now.Add(2 * time.Minute)
	if m.passthru(app("b")) {
		t.Fatal("expired entry still passthru")
	}
}

// TestApplyResponsePolicy checks the dialer's entry point makes exactly
// the processor's changes for a request without Origin, in place, and
// that applying it twice (dialer, then ext_proc when both run) changes
// nothing more.
func TestApplyResponsePolicy(t *testing.T) {
	in := http.Header{
		"Set-Cookie":                  {"coder_session_token=x", "a=1"},
		"Vary":                        {"Accept-Encoding, origin", "Access-Control-Request-Headers"},
		"Access-Control-Allow-Origin": {"*"},
		"X-Content-Type-Options":      {"sniff"},
	}
	for _, app := range []AppInfo{simpleApp, passthruApp, pathApp, {}} {
		e := &Exchange{Method: "GET", Host: targetHost, App: app}
		p, _ := testPolicy(t)
		want := apply(in, p.response(context.Background(), e, in).Mutation)
		got := in.Clone()
		ApplyResponsePolicy(e, got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: got %v, want %v", app, got, want)
		}
		again := got.Clone()
		ApplyResponsePolicy(e, again)
		if !reflect.DeepEqual(again, got) {
			t.Errorf("%+v: second pass %v, first %v", app, again, got)
		}
	}
}

// TestDialerThenProcessor checks the fast path's division of work: the
// dialer applies the policy to every response (no lookups; the request's
// own origin allowed), and Envoy runs the processor only for cross-origin
// requests, on the dialer's result. For every origin and app, the
// processor on the dialer's result gives the browser exactly what the
// processor alone gives; for the request's own origin, so does the dialer
// alone.
func TestDialerThenProcessor(t *testing.T) {
	in := http.Header{
		"Set-Cookie":                       {"coder_session_token=x", "a=1"},
		"Vary":                             {"Accept-Encoding, origin"},
		"Access-Control-Allow-Origin":      {"*"},
		"Access-Control-Allow-Credentials": {"false"},
		"X-Content-Type-Options":           {"sniff"},
	}
	own := "https://" + targetHost
	for _, app := range []AppInfo{simpleApp, passthruApp, pathApp, {}} {
		for _, origin := range []string{own, "http://" + targetHost, aliceOrigin, aliceOrigin + ":8443", bobOrigin, evilOrigin, brokenOrigin, "null", ""} {
			for _, method := range []string{"GET", "POST", "PROPFIND"} {
				e := &Exchange{Method: method, Host: targetHost, Origin: origin, App: app}
				p, _ := testPolicy(t)
				alone := apply(in, p.response(context.Background(), e, in).Mutation)
				dialer := in.Clone()
				ApplyResponsePolicy(e, dialer)
				both := apply(dialer, p.response(context.Background(), e, dialer).Mutation)
				if !reflect.DeepEqual(both, alone) {
					t.Errorf("%+v %s %q: dialer then processor %v, processor alone %v", app, method, origin, both, alone)
				}
				if strings.HasSuffix(origin, "://"+targetHost) {
					if !reflect.DeepEqual(dialer, alone) {
						t.Errorf("%+v %s own origin %q: dialer alone %v, processor %v", app, method, origin, dialer, alone)
					}
				} else if app != passthruApp && dialer.Get("Access-Control-Allow-Origin") != "" {
					t.Errorf("%+v %s %q: the dialer alone allowed another origin: %v", app, method, origin, dialer)
				}
			}
		}
	}
}

func TestTokenAppInfo(t *testing.T) {
	if got := TokenAppInfo(appurl.AccessMethodSubdomain, "", alice); got != simpleApp {
		t.Errorf("%+v, want %+v (no cors_behavior is simple)", got, simpleApp)
	}
	if got := TokenAppInfo("", "simple", alice); got.Known {
		t.Errorf("%+v known without an access method", got)
	}
}
