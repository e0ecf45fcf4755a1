package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
)

const (
	authzToken = "token-from-authz"
	deniedBody = "<h1>Denied by authz</h1>\n"
)

// smokeAuthz is a tiny ext_authz server: paths containing "/deny/" are denied
// with a custom status, headers and body; everything else is allowed with the
// internal token header, a response cookie and dynamic metadata.
type smokeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu     sync.Mutex
	checks []*authv3.AttributeContext_HttpRequest
}

func (a *smokeAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	a.mu.Lock()
	a.checks = append(a.checks, h)
	a.mu.Unlock()
	if strings.Contains(h.GetPath(), "/deny/") {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
				Headers: []*corev3.HeaderValueOption{
					{Header: &corev3.HeaderValue{Key: "content-type", Value: "text/html; charset=utf-8"}},
					{Header: &corev3.HeaderValue{Key: "x-denied-by", Value: "smoke-authz"}},
					{Header: &corev3.HeaderValue{Key: "set-cookie", Value: "coder_signed_app_token=; Path=/; Max-Age=0"}},
				},
				Body: deniedBody,
			}},
		}, nil
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: edgewire.AppTokenHeader, Value: authzToken},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "set-cookie", Value: "coder_signed_app_token=fresh; Path=/; HttpOnly"},
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
			}},
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"user_id": structpb.NewStringValue("user-smoke-1"),
		}},
	}, nil
}

func (a *smokeAuthz) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.checks)
}

func (a *smokeAuthz) last() *authv3.AttributeContext_HttpRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.checks[len(a.checks)-1]
}

// seen is what the upstream observed of one request.
type seen struct {
	Host   string              `json:"host"`
	Path   string              `json:"path"`
	Header map[string][]string `json:"header"`
}

// smokeUpstream echoes requests as JSON, echoes websocket messages after
// sending the token header it saw, and speaks a byte echo after an
// "Upgrade: DERP" handshake on /derp.
func smokeUpstream(t testing.TB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/derp":
			if !strings.EqualFold(r.Header.Get("Upgrade"), "DERP") {
				http.Error(w, "want Upgrade: DERP", http.StatusBadRequest)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("upstream: hijack: %v", err)
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			buf := make([]byte, 64)
			n, err := brw.Read(buf)
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte("echo:" + string(buf[:n])))
		case strings.HasSuffix(r.URL.Path, "/ws"):
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.SetReadLimit(1 << 20)
			ctx := r.Context()
			if err := c.Write(ctx, websocket.MessageText, []byte(strings.Join(r.Header.Values("X-Wsedge-App-Token"), ","))); err != nil {
				return
			}
			for {
				typ, msg, err := c.Read(ctx)
				if err != nil {
					return
				}
				if err := c.Write(ctx, typ, msg); err != nil {
					return
				}
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(seen{Host: r.Host, Path: r.URL.RequestURI(), Header: r.Header})
		}
	})
}

// smokeOwners resolves every app to one owner.
type smokeOwners struct{}

func (smokeOwners) Owner(context.Context, appurl.Request) (uuid.UUID, error) { return uuid.Nil, nil }

// withSmokeFakes is real Envoy between az (with the real app-policy
// processor: app routes fail closed without it) and smokeUpstream.
func withSmokeFakes(az *smokeAuthz) edgeOption {
	return func(s *edgeSetup) {
		WithAuthz(az, realExtProc(s.t, smokeOwners{}, nil))(s)
		WithUpstream(smokeUpstream(s.t))(s)
	}
}

// TestSmoke runs real Envoy with a generated bootstrap between a Go ext_authz
// server and a Go upstream, and checks what a browser would notice.
func TestSmoke(t *testing.T) {
	az := &smokeAuthz{}
	h := startEdge(t, withSmokeFakes(az))
	gs, proc, edge, do := h.grpc, h.envoy, h.addr, h.roundTrip

	t.Run("allowed path app gets authz header, never the client's", func(t *testing.T) {
		resp, body := do(t, "GET", "http://"+accessHost+"/@alice/dev.main/apps/code/?x=1", http.Header{
			"X-Wsedge-App-Token": {"forged"},
			"X-WSEDGE-Internal":  {"evil"},
			"X-Wsedge-":          {"bare-prefix"},
			"Cookie":             {"coder_session_token=s3cret"},
			"X-Not-For-Authz":    {"1"},
			"X-Forwarded-For":    {"203.0.113.9"},
		})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		s := upstreamSaw(t, body)
		if got := s.Header["X-Wsedge-App-Token"]; len(got) != 1 || got[0] != authzToken {
			t.Errorf("upstream x-wsedge-app-token = %q, want only %q", got, authzToken)
		}
		for k := range s.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-wsedge-") && k != "X-Wsedge-App-Token" {
				t.Errorf("client header %s reached the upstream", k)
			}
		}
		if s.Path != "/@alice/dev.main/apps/code/?x=1" || s.Host != accessHost {
			t.Errorf("upstream saw %s %s", s.Host, s.Path)
		}
		if got := resp.Header.Values("Set-Cookie"); len(got) != 1 || got[0] != "coder_signed_app_token=fresh; Path=/; HttpOnly" {
			t.Errorf("Set-Cookie = %q", got)
		}
		if resp.Header.Get("X-Wsedge-App-Token") != "" {
			t.Error("internal header leaked to the client")
		}
		check := az.last()
		for k := range check.GetHeaders() {
			if strings.HasPrefix(k, "x-wsedge-") {
				t.Errorf("authz saw client header %s", k)
			}
		}
		if check.GetHeaders()["cookie"] != "coder_session_token=s3cret" {
			t.Errorf("authz cookie = %q", check.GetHeaders()["cookie"])
		}
		// Envoy is the edge: the client's X-Forwarded-For is not trusted.
		if got := check.GetHeaders()["x-envoy-external-address"]; got != "127.0.0.1" {
			t.Errorf("authz x-envoy-external-address = %q, want the peer 127.0.0.1", got)
		}
		// Envoy appends one hop to X-Forwarded-For: the peer, or for a
		// loopback peer its own local address (so not checked here).
		if got := strings.Split(check.GetHeaders()["x-forwarded-for"], ","); len(got) != 2 || got[0] != "203.0.113.9" {
			t.Errorf("authz x-forwarded-for = %q, want the client's value plus one hop", got)
		}
		if _, ok := check.GetHeaders()["x-not-for-authz"]; ok {
			t.Error("authz got a header outside allowed_headers")
		}
		if check.GetHost() != accessHost || check.GetPath() != "/@alice/dev.main/apps/code/?x=1" {
			t.Errorf("authz saw %s %s", check.GetHost(), check.GetPath())
		}
	})

	t.Run("encoded path app is checked too", func(t *testing.T) {
		before := az.count()
		resp, _ := do(t, "GET", "http://"+accessHost+"/%40alice/deny/apps/code/", nil)
		if resp.StatusCode != http.StatusForbidden || az.count() != before+1 {
			t.Fatalf("status %d, checks %d→%d", resp.StatusCode, before, az.count())
		}
	})

	t.Run("denied gets authz status, headers and body", func(t *testing.T) {
		resp, body := do(t, "GET", "http://"+accessHost+"/@alice/deny/apps/code/", nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if body != deniedBody {
			t.Errorf("body %q, want %q", body, deniedBody)
		}
		if resp.Header.Get("X-Denied-By") != "smoke-authz" || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("headers %v", resp.Header)
		}
		if got := resp.Header.Get("Set-Cookie"); got != "coder_signed_app_token=; Path=/; Max-Age=0" {
			t.Errorf("Set-Cookie %q", got)
		}
	})

	t.Run("subdomain app with upper-case host and port", func(t *testing.T) {
		host := "CODE--MAIN--DEV--ALICE.APPS.WSEDGE.TEST:8080"
		resp, body := do(t, "GET", "http://"+accessHost+"/anything", http.Header{"Host": {host}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if s := upstreamSaw(t, body); s.Host != host {
			t.Errorf("upstream Host %q, want %q unchanged", s.Host, host)
		}
		if got := az.last().GetHost(); got != host {
			t.Errorf("authz host %q", got)
		}
	})

	t.Run("probes skip authz", func(t *testing.T) {
		before := az.count()
		for _, p := range []string{"/healthz", "/healthz-report", "/api/v2/buildinfo", "/latency-check", "/derp/latency-check"} {
			resp, body := do(t, "GET", "http://"+accessHost+p, nil)
			if resp.StatusCode != http.StatusOK || upstreamSaw(t, body).Path != p {
				t.Errorf("%s: %d %s", p, resp.StatusCode, body)
			}
		}
		// Coder answers /latency-check on every host, app hosts included.
		resp, body := do(t, "GET", "http://code--main--dev--alice.apps.wsedge.test/latency-check", nil)
		if resp.StatusCode != http.StatusOK || upstreamSaw(t, body).Path != "/latency-check" {
			t.Errorf("app host /latency-check: %d %s", resp.StatusCode, body)
		}
		if az.count() != before {
			t.Errorf("authz consulted %d times for probes", az.count()-before)
		}
		// A path that merely starts like a probe is checked.
		if resp, _ := do(t, "GET", "http://"+accessHost+"/healthz/../@alice/deny/apps/x/", nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("/healthz/.. status %d, want authz's 403", resp.StatusCode)
		}
	})

	t.Run("unknown host is refused", func(t *testing.T) {
		before := az.count()
		resp, body := do(t, "GET", "http://elsewhere.test/@alice/dev/apps/code/", nil)
		if resp.StatusCode != http.StatusMisdirectedRequest || body != "wsedge: unknown host\n" {
			t.Errorf("status %d body %q", resp.StatusCode, body)
		}
		if az.count() != before {
			t.Error("authz consulted for an unknown host")
		}
		resp, body = do(t, "GET", "http://10.9.8.7:8080/healthz", nil)
		if resp.StatusCode != http.StatusOK || upstreamSaw(t, body).Path != "/healthz" {
			t.Errorf("probe by address: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("dashboard CORS preflight answered by Envoy", func(t *testing.T) {
		resp, _ := do(t, "OPTIONS", "http://"+accessHost+"/api/v2/buildinfo", http.Header{
			"Origin":                        {"http://dashboard.wsedge.test"},
			"Access-Control-Request-Method": {"GET"},
		})
		if resp.Header.Get("Access-Control-Allow-Origin") != "http://dashboard.wsedge.test" {
			t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
		}
		resp, _ = do(t, "OPTIONS", "http://"+accessHost+"/api/v2/buildinfo", http.Header{
			"Origin":                        {"http://evil.test"},
			"Access-Control-Request-Method": {"GET"},
		})
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("foreign origin allowed: %q", got)
		}
	})

	t.Run("websocket upgrade passes through", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, resp, err := h.dialWebsocket(ctx, "ws://"+accessHost+"/@alice/dev.main/apps/code/ws", http.Header{"X-Wsedge-App-Token": {"forged"}})
		if err != nil {
			t.Fatalf("dial: %v (resp %v)", err, resp)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		_, first, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(first) != authzToken {
			t.Errorf("upstream websocket saw token %q, want %q", first, authzToken)
		}
		payload := strings.Repeat("wsedge", 10_000)
		if err := c.Write(ctx, websocket.MessageBinary, []byte(payload)); err != nil {
			t.Fatal(err)
		}
		typ, echo, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageBinary || string(echo) != payload {
			t.Fatalf("echo: %v %v len %d", err, typ, len(echo))
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("DERP upgrade passes through without authz", func(t *testing.T) {
		before := az.count()
		conn, err := net.DialTimeout("tcp", edge, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(conn, "GET /derp HTTP/1.1\r\nHost: "+accessHost+"\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "DERP") {
			t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
		}
		if _, err := io.WriteString(conn, "frame"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("echo:frame"))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "echo:frame" {
			t.Fatalf("echo %q: %v", buf, err)
		}
		if az.count() != before {
			t.Error("authz consulted for /derp")
		}

		// The DERP upgrade is allowed on /derp only.
		conn2, err := net.DialTimeout("tcp", edge, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close()
		_ = conn2.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(conn2, "GET /@alice/dev/apps/derp/ HTTP/1.1\r\nHost: "+accessHost+"\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp2, err := http.ReadResponse(bufio.NewReader(conn2), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp2.StatusCode == http.StatusSwitchingProtocols {
			t.Error("DERP upgrade accepted on an app route")
		}
		t.Logf("DERP upgrade on an app route: %s", resp2.Status)
	})

	t.Run("access log carries authz metadata, not queries", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			log := proc.Stdout()
			if strings.Contains(log, `"user_id":"user-smoke-1"`) {
				if strings.Contains(log, "x=1") {
					t.Errorf("access log holds a query string:\n%s", log)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no authz metadata in the access log:\n%s", log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("authz down fails closed with 503", func(t *testing.T) {
		gs.Stop()
		resp, _ := do(t, "GET", "http://"+accessHost+"/@alice/dev.main/apps/code/", nil)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
	})
}

// upstreamSaw decodes the upstream's echo of a request.
func upstreamSaw(t *testing.T, body string) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	return s
}
