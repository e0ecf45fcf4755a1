package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/envoy"
)

// Apps of the CORS tests, on the smoke test's wildcard. Slugs starting
// with "pt" belong to a passthru template.
const (
	aliceAPI      = "api--main--dev--alice.apps.wsedge.test"
	aliceWeb      = "http://web--main--dev--alice.apps.wsedge.test"
	alicePassthru = "pt--main--dev--alice.apps.wsedge.test"
	bobWeb        = "http://web--main--dev--bob.apps.wsedge.test"
	randomSite    = "https://evil.example.net"

	smuggledCookie = "coder_subdomain_app_session_token_0123=key; Domain=.apps.wsedge.test; Path=/; HttpOnly"
)

var corsOwners = map[string]uuid.UUID{
	"alice": uuid.MustParse("0a11ce00-0000-4000-8000-000000000001"),
	"bob":   uuid.MustParse("0b0b0000-0000-4000-8000-000000000002"),
}

// corsAuthz allows every request with the metadata authz emits: the owner
// from the host's user part, subdomain or path access, and the CORS
// behaviour of the app's template. It adds the refreshed-token cookie, as
// authz does after an issue.
type corsAuthz struct {
	authv3.UnimplementedAuthorizationServer
	pattern *appurl.HostnamePattern
	checks  atomic.Int64
}

func (a *corsAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.checks.Add(1)
	h := req.GetAttributes().GetRequest().GetHttp()
	if strings.Contains(h.GetPath(), "/login-redirect/") {
		// What authz answers after decrypting a smuggled key: a redirect
		// that sets the subdomain session cookie.
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_SeeOther},
				Headers: []*corev3.HeaderValueOption{
					{Header: &corev3.HeaderValue{Key: "location", Value: "/"}},
					{Header: &corev3.HeaderValue{Key: "set-cookie", Value: smuggledCookie}},
					{Header: &corev3.HeaderValue{Key: "access-control-allow-origin", Value: "kept-by-design"}},
				},
			}},
		}, nil
	}
	meta := map[string]string{edgewire.MetaCORSBehavior: "simple"}
	if sub, ok := a.pattern.Match(h.GetHost()); ok {
		app, err := appurl.ParseSubdomainAppURL(sub)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		meta[edgewire.MetaAccessMethod] = string(appurl.AccessMethodSubdomain)
		meta[edgewire.MetaUserID] = corsOwners[app.Username].String()
		meta[edgewire.MetaApp] = app.AppSlugOrPort
		if strings.HasPrefix(app.AppSlugOrPort, "pt") {
			meta[edgewire.MetaCORSBehavior] = "passthru"
		}
	} else {
		meta[edgewire.MetaAccessMethod] = string(appurl.AccessMethodPath)
		meta[edgewire.MetaUserID] = corsOwners["alice"].String()
	}
	fields := map[string]*structpb.Value{}
	for k, v := range meta {
		fields[k] = structpb.NewStringValue(v)
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "set-cookie", Value: "coder_signed_app_token=fresh; Path=/; HttpOnly"},
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
			}},
		}},
		DynamicMetadata: &structpb.Struct{Fields: fields},
	}, nil
}

// corsOwnerResolver stands in for the primary's resolve-app-owner.
type corsOwnerResolver struct{}

func (corsOwnerResolver) Owner(_ context.Context, r appurl.Request) (uuid.UUID, error) {
	if id, ok := corsOwners[r.UsernameOrID]; ok {
		return id, nil
	}
	return uuid.Nil, status.Error(codes.NotFound, "Application not found.")
}

// switchableProcessor serves the real processor until failure is set:
// then every stream fails ("down"), stalls past Envoy's message timeout
// ("stall") or is answered by a processor that changes nothing ("noop").
type switchableProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	real    extprocv3.ExternalProcessorServer
	failure atomic.Value // string
}

func (s *switchableProcessor) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	switch s.failure.Load() {
	case "noop":
		return noopProcess(stream)
	case "down":
		return status.Error(codes.Unavailable, "extproc down")
	case "stall":
		if _, err := stream.Recv(); err != nil {
			return err
		}
		<-stream.Context().Done()
		return nil
	}
	return s.real.Process(stream)
}

// noopProcess answers every message with "continue, no changes": the
// cost of the ext_proc hop without any policy.
func noopProcess(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		resp := &extprocv3.ProcessingResponse{}
		switch req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		default:
			resp.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// corsApp is a workspace app that sets CORS headers, Vary values and
// cookies of its own, and answers preflights itself.
type corsApp struct {
	mu   sync.Mutex
	hits []string // "METHOD host path"
}

func (a *corsApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.hits = append(a.hits, r.Method+" "+r.Host+" "+r.URL.Path)
	a.mu.Unlock()
	if r.URL.Path == "/ws" {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		_ = c.Write(r.Context(), typ, append([]byte("echo:"), msg...))
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "https://app-chosen.example")
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Set("Access-Control-Allow-Methods", "GET, PROPFIND")
	h.Set("Access-Control-Allow-Headers", "X-App")
	h.Set("Vary", "Origin, Accept-Encoding")
	h.Add("Set-Cookie", "coder_signed_app_token=x; Path=/")
	h.Add("Set-Cookie", "coder_session_token=planted; Domain=.wsedge.test; Path=/")
	h.Add("Set-Cookie", "app_pref=dark; Path=/")
	if r.Method == http.MethodOptions {
		h.Set("X-App-Preflight", "answered by the app")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("app body\n"))
}

func (a *corsApp) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.hits)
}

// corsFakes are the CORS tests' stand-ins: the fake authz plus the real
// extproc (behind a switch) on one gRPC server, as in production, and the
// app.
type corsFakes struct {
	az   *corsAuthz
	proc *switchableProcessor
	reg  *prometheus.Registry
	app  *corsApp
}

// withCORSFakes is real Envoy with the generated config (ext_proc's
// message timeout 1 s) between f's stand-ins, which it fills in.
func withCORSFakes(f *corsFakes) edgeOption {
	return func(s *edgeSetup) {
		pattern, err := appurl.CompileHostnamePattern(wildcardHost)
		if err != nil {
			s.t.Fatal(err)
		}
		f.az, f.reg, f.app = &corsAuthz{pattern: pattern}, prometheus.NewRegistry(), &corsApp{}
		f.proc = &switchableProcessor{real: realExtProc(s.t, corsOwnerResolver{}, f.reg)}
		WithAuthz(f.az, f.proc)(s)
		WithUpstream(f.app)(s)
		WithEnvoy(func(c *envoy.Config) { c.ExtProcTimeout = time.Second })(s)
	}
}

func corsHeaders(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out[k] = v
		}
	}
	return out
}

// TestExtProcOnlyWithOrigin checks, through real Envoy, that with the
// fast path the app-policy ext_proc is skipped for a request without
// Origin (the upstream's answer passes as sent: here a bare upstream, in
// production the dialer, which applies the policy itself) and still runs
// for one with Origin. WithJWKS (no keys) turns the fast path on in front
// of the stand-in upstream.
func TestExtProcOnlyWithOrigin(t *testing.T) {
	st := startEdge(t, withCORSFakes(&corsFakes{}), WithJWKS())
	pathApp := "http://" + accessHost + "/@alice/dev.main/apps/code/"
	resp, _ := roundTrip(t, st.client, "GET", pathApp, nil)
	if resp.StatusCode != http.StatusOK || len(corsHeaders(resp.Header)) == 0 {
		t.Errorf("no Origin: status %d CORS %v, want the upstream's headers untouched (ext_proc skipped)", resp.StatusCode, corsHeaders(resp.Header))
	}
	resp, _ = roundTrip(t, st.client, "GET", pathApp, http.Header{"Origin": {aliceWeb}})
	if resp.StatusCode != http.StatusOK || len(corsHeaders(resp.Header)) != 0 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("with Origin: status %d CORS %v nosniff %q, want the app policy applied", resp.StatusCode, corsHeaders(resp.Header), resp.Header.Get("X-Content-Type-Options"))
	}
}

// TestExtProcCORS runs the browser's view of app CORS through real Envoy
// 1.40 with the generated config.
func TestExtProcCORS(t *testing.T) {
	f := &corsFakes{}
	// Without the fast path ext_proc processes every app response, which
	// is what this test exercises (with it ext_proc sees only cross-origin
	// requests and the dialer applies the same policy to every response;
	// TestExtProcOnlyWithOrigin, TestSameOriginSkipsExtProc).
	st := startEdge(t, withCORSFakes(f), WithoutFastPath())
	do := st.roundTrip
	preflightHeaders := func(origin, method, headers string) http.Header {
		h := http.Header{"Origin": {origin}, "Access-Control-Request-Method": {method}}
		if headers != "" {
			h.Set("Access-Control-Request-Headers", headers)
		}
		return h
	}

	t.Run("same-owner preflight answered before authz, app untouched", func(t *testing.T) {
		checks, hits := f.az.checks.Load(), f.app.count()
		resp, body := do(t, "OPTIONS", "http://"+aliceAPI+"/v1/items", preflightHeaders(aliceWeb, "PUT", "content-type,x-requested-with"))
		if resp.StatusCode != http.StatusOK || body != "" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		want := map[string][]string{
			"Access-Control-Allow-Origin":      {aliceWeb},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Allow-Methods":     {"PUT"},
			"Access-Control-Allow-Headers":     {"Content-Type, X-Requested-With"},
		}
		if got := corsHeaders(resp.Header); !mapsEqual(got, want) {
			t.Errorf("CORS headers %v, want %v", got, want)
		}
		// coderd sends three Vary lines; Envoy joins the lines of a local
		// reply into one list, which means the same.
		if got := varyValues(resp.Header); !slices.Equal(got, []string{"Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"}) {
			t.Errorf("Vary %q", got)
		}
		if f.az.checks.Load() != checks {
			t.Error("a same-owner preflight went to ext_authz (and so to the login flow)")
		}
		if f.app.count() != hits {
			t.Error("a preflight answered by the proxy reached the app")
		}
	})

	t.Run("preflight from another owner's app refused, app untouched", func(t *testing.T) {
		hits := f.app.count()
		resp, _ := do(t, "OPTIONS", "http://"+aliceAPI+"/v1/items", preflightHeaders(bobWeb, "PUT", "content-type"))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := corsHeaders(resp.Header); len(got) != 0 {
			t.Errorf("refused preflight carries %v", got)
		}
		if f.app.count() != hits {
			t.Error("refused preflight reached the app")
		}
	})

	t.Run("preflight from a random site refused", func(t *testing.T) {
		hits := f.app.count()
		resp, _ := do(t, "OPTIONS", "http://"+aliceAPI+"/", preflightHeaders(randomSite, "DELETE", ""))
		if got := corsHeaders(resp.Header); resp.StatusCode != http.StatusOK || len(got) != 0 {
			t.Errorf("status %d, CORS headers %v", resp.StatusCode, got)
		}
		if f.app.count() != hits {
			t.Error("refused preflight reached the app")
		}
	})

	t.Run("passthru app answers its own preflight", func(t *testing.T) {
		hits := f.app.count()
		// A request seen first teaches the proxy the app is passthru;
		// before that its same-owner preflight is answered like a simple
		// app's (see package extproc).
		do(t, "GET", "http://"+alicePassthru+"/", http.Header{"Origin": {aliceWeb}})
		resp, _ := do(t, "OPTIONS", "http://"+alicePassthru+"/v1/items", preflightHeaders(aliceWeb, "PUT", ""))
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("X-App-Preflight") == "" {
			t.Fatalf("status %d, headers %v: the app did not answer", resp.StatusCode, resp.Header)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app-chosen.example" {
			t.Errorf("app's ACAO %q did not reach the browser", got)
		}
		if f.app.count() != hits+2 {
			t.Errorf("app hits %d, want %d", f.app.count(), hits+2)
		}
		// Another owner's preflight also goes to the app in passthru.
		resp, _ = do(t, "OPTIONS", "http://"+alicePassthru+"/", preflightHeaders(bobWeb, "PUT", ""))
		if resp.Header.Get("X-App-Preflight") == "" {
			t.Error("passthru preflight from another owner not forwarded to the app")
		}
	})

	t.Run("credentialed cross-origin fetch from the same owner", func(t *testing.T) {
		resp, body := do(t, "GET", "http://"+aliceAPI+"/v1/items", http.Header{"Origin": {aliceWeb}, "Cookie": {"coder_signed_app_token=t; app_pref=light"}})
		if resp.StatusCode != http.StatusOK || body != "app body\n" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		want := map[string][]string{
			"Access-Control-Allow-Origin":      {aliceWeb},
			"Access-Control-Allow-Credentials": {"true"},
		}
		if got := corsHeaders(resp.Header); !mapsEqual(got, want) {
			t.Errorf("CORS headers %v, want %v", got, want)
		}
		// The app's "Vary: Origin, Accept-Encoding" loses Origin; the
		// proxy's own Vary: Origin (coderd's CORS handler sends it) is
		// the only Origin left.
		if got := varyValues(resp.Header); !slices.Equal(got, []string{"Origin", "Accept-Encoding"}) {
			t.Errorf("Vary values %q, want [Origin Accept-Encoding]", got)
		}
		if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app_pref=dark; Path=/", "coder_signed_app_token=fresh; Path=/; HttpOnly"}) {
			t.Errorf("Set-Cookie %q: want the app's own cookie and authz's token, never the app's Coder cookies", got)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "" {
			t.Errorf("subdomain app got X-Content-Type-Options %q; coderd sends none there", got)
		}
	})

	t.Run("fetch from another owner's app or a random site gets no CORS", func(t *testing.T) {
		for _, origin := range []string{bobWeb, randomSite, "null"} {
			resp, body := do(t, "POST", "http://"+aliceAPI+"/v1/items", http.Header{"Origin": {origin}, "Cookie": {"coder_signed_app_token=t"}})
			if resp.StatusCode != http.StatusOK || body != "app body\n" {
				t.Fatalf("%s: status %d body %q", origin, resp.StatusCode, body)
			}
			if got := corsHeaders(resp.Header); len(got) != 0 {
				t.Errorf("%s: CORS headers %v (the browser must not expose the answer)", origin, got)
			}
			if got := varyValues(resp.Header); !slices.Equal(got, []string{"Origin", "Accept-Encoding"}) {
				t.Errorf("%s: Vary values %q", origin, got)
			}
		}
	})

	t.Run("passthru app's CORS headers reach the browser untouched", func(t *testing.T) {
		resp, _ := do(t, "GET", "http://"+alicePassthru+"/", http.Header{"Origin": {bobWeb}})
		want := map[string][]string{
			"Access-Control-Allow-Origin":      {"https://app-chosen.example"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Allow-Methods":     {"GET, PROPFIND"},
			"Access-Control-Allow-Headers":     {"X-App"},
		}
		if got := corsHeaders(resp.Header); !mapsEqual(got, want) {
			t.Errorf("CORS headers %v, want %v", got, want)
		}
		if got := resp.Header.Values("Vary"); !slices.Equal(got, []string{"Origin, Accept-Encoding"}) {
			t.Errorf("Vary %q, want the app's line as sent", got)
		}
		if got := resp.Header.Values("Set-Cookie"); slices.ContainsFunc(got, func(c string) bool { return strings.Contains(c, "=x;") || strings.Contains(c, "planted") }) {
			t.Errorf("passthru app set a Coder cookie: %q", got)
		}
	})

	t.Run("path app: CORS stripped, nosniff, Coder cookies removed", func(t *testing.T) {
		resp, body := do(t, "GET", "http://"+accessHost+"/@alice/dev.main/apps/code/", nil)
		if resp.StatusCode != http.StatusOK || body != "app body\n" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		if got := corsHeaders(resp.Header); len(got) != 0 {
			t.Errorf("CORS headers %v", got)
		}
		if got := varyValues(resp.Header); !slices.Equal(got, []string{"Origin", "Accept-Encoding"}) {
			t.Errorf("Vary %q, want the proxy's Origin and the app's Accept-Encoding", resp.Header.Values("Vary"))
		}
		if got := resp.Header.Values("X-Content-Type-Options"); !slices.Equal(got, []string{"nosniff"}) {
			t.Errorf("X-Content-Type-Options %q", got)
		}
		if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app_pref=dark; Path=/", "coder_signed_app_token=fresh; Path=/; HttpOnly"}) {
			t.Errorf("Set-Cookie %q", got)
		}
	})

	t.Run("path app with the dashboard origin keeps Envoy's static CORS", func(t *testing.T) {
		resp, _ := do(t, "GET", "http://"+accessHost+"/@alice/dev.main/apps/code/", http.Header{"Origin": {"http://dashboard.wsedge.test"}})
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "http://dashboard.wsedge.test" {
			t.Errorf("ACAO %q: the dashboard CORS of path apps must survive the app-header stripping", got)
		}
	})

	t.Run("websocket upgrade through the app policy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := st.dialWebsocket(ctx, "ws://"+aliceAPI+"/ws", http.Header{"Origin": {aliceWeb}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.CloseNow()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != aliceWeb {
			t.Errorf("101 ACAO %q", got)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		_, msg, err := c.Read(ctx)
		if err != nil || string(msg) != "echo:hi" {
			t.Fatalf("read %q, %v", msg, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("authz's own answers pass untouched", func(t *testing.T) {
		hits := f.app.count()
		resp, _ := do(t, "GET", "http://"+aliceAPI+"/login-redirect/?x=1", http.Header{"Origin": {aliceWeb}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{smuggledCookie}) {
			t.Errorf("Set-Cookie %q: authz's session cookie must reach the browser", got)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "kept-by-design" {
			t.Errorf("ACAO %q: the app policy touched a local reply", got)
		}
		if f.app.count() != hits {
			t.Error("denied request reached the app")
		}
	})

	t.Run("removed Coder cookies are counted", func(t *testing.T) {
		got := counterValue(t, f.reg, "wsedge_extproc_coder_cookies_removed_total")
		if got < 8 { // two per app response above
			t.Errorf("wsedge_extproc_coder_cookies_removed_total = %v", got)
		}
	})

	t.Run("ext_proc failing fails the request closed", func(t *testing.T) {
		for _, failure := range []string{"down", "stall"} {
			f.proc.failure.Store(failure)
			resp, body := do(t, "GET", "http://"+aliceAPI+"/", http.Header{"Origin": {aliceWeb}})
			if resp.StatusCode < 500 || strings.Contains(body, "app body") {
				t.Errorf("%s: status %d body %q, want a 5xx without the app's answer", failure, resp.StatusCode, body)
			} else if failure == "down" && resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("down: status %d, want 503 (status_on_error)", resp.StatusCode)
			}
			// Ordinary requests are processed on the response only, so
			// the app (which authz allowed) may see the request, but its
			// answer never reaches the browser unprocessed.
			hits := f.app.count()
			resp, _ = do(t, "OPTIONS", "http://"+aliceAPI+"/", preflightHeaders(aliceWeb, "PUT", ""))
			if resp.StatusCode < 500 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("%s: preflight status %d ACAO %q, want a 5xx without CORS", failure, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
			}
			if f.app.count() != hits {
				t.Errorf("%s: the preflight reached the app", failure)
			}
			resp, body = do(t, "GET", "http://"+accessHost+"/@alice/dev.main/apps/code/", nil)
			if resp.StatusCode < 500 || strings.Contains(body, "app body") {
				t.Errorf("%s: path app status %d body %q, want a 5xx (response not processed)", failure, resp.StatusCode, body)
			}
			t.Logf("ext_proc %s: %d", failure, resp.StatusCode)
		}
		f.proc.failure.Store("")
		if resp, _ := do(t, "GET", "http://"+aliceAPI+"/", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("after recovery: status %d", resp.StatusCode)
		}
	})

	t.Run("authz and ext_proc server down: 503", func(t *testing.T) {
		st.grpc.Stop()
		for _, h := range []http.Header{nil, preflightHeaders(aliceWeb, "PUT", "")} {
			method := "GET"
			if h != nil {
				method = "OPTIONS"
			}
			resp, body := do(t, method, "http://"+aliceAPI+"/", h)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Access-Control-Allow-Origin") != "" || strings.Contains(body, "app body") {
				t.Errorf("%s: status %d ACAO %q body %q, want 503", method, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), body)
			}
		}
	})
}

// varyValues splits every Vary line into its values.
func varyValues(h http.Header) []string {
	var out []string
	for _, line := range h.Values("Vary") {
		for v := range strings.SplitSeq(line, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// counterValue reads a registered counter without labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
