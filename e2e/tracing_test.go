package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/wsedge/wsedge/internal/devstack"
)

// otlpReceiver is a real OTLP/gRPC trace collector on loopback: it keeps
// every span it is sent, with the service.name of its resource.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service string
	*tracepb.Span
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, receivedSpan{service: service, Span: s})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) snapshot() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSpan(nil), r.spans...)
}

func startOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{}
	g := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(g, r)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return r, ln.Addr().String()
}

func spanID(b []byte) string { return hex.EncodeToString(b) }

func hasStringValue(s *tracepb.Span, substr string) bool {
	for _, a := range s.GetAttributes() {
		if strings.Contains(a.GetValue().GetStringValue(), substr) {
			return true
		}
	}
	return false
}

// TestOneTraceThroughEnvoyAuthzAndDialer: with tracing on, one app request
// (a session authz has not seen, so authz asks the primary, to an app port
// the dialer has not dialled yet) is one trace across Envoy, authz and the
// dialer, exported to a real OTLP receiver, with the parent links intact:
// Envoy's request span → its ext_authz call → authz's gRPC server span →
// the token-lookup and issue steps (→ the issue call to the primary), and
// Envoy's request span → Envoy's upstream span → the dialer's request span
// → the tailnet dial.
func TestOneTraceThroughEnvoyAuthzAndDialer(t *testing.T) {
	recv, endpoint := startOTLPReceiver(t)
	lvl := slog.LevelWarn
	if os.Getenv("E2E_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	fp := startEdge(t, WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))), WithDev(func(c *devstack.DevConfig) {
		c.OTLPEndpoint = endpoint
	}))
	session := fp.newSession(t)
	const marker, secret = "/traced-request", "query-secret-4f1d"
	a := fetch(fp.plainClient(t), "http://"+echoHost+marker+"?token="+secret, http.Header{"Coder-Session-Token": {session}})
	if a.status != http.StatusOK {
		t.Fatalf("app request: %s", a)
	}

	// The spans of the request's trace, once every part has exported
	// (Envoy flushes every 5 s, the services every 100 ms).
	var trace []receivedSpan
	var ingress receivedSpan
	waitFor(t, 30*time.Second, "spans of Envoy, authz and the dialer for the request", func() (bool, string) {
		all := recv.snapshot()
		ingress = receivedSpan{}
		for _, s := range all {
			if s.service == "wsedge-edge" && len(s.GetParentSpanId()) == 0 && hasStringValue(s.Span, marker) {
				ingress = s
			}
		}
		if ingress.Span == nil {
			return false, fmt.Sprintf("no Envoy root span naming %s among %d spans", marker, len(all))
		}
		trace = trace[:0]
		services := map[string]bool{}
		for _, s := range all {
			if string(s.GetTraceId()) == string(ingress.GetTraceId()) {
				trace = append(trace, s)
				services[s.service] = true
			}
		}
		if !services["wsedge-authz"] || !services["wsedge-dialer"] || !hasName(trace, "tailnet.dial") || !hasName(trace, "authz.issue_token") {
			return false, describe(trace)
		}
		return true, ""
	})

	// Query strings (where terminal tokens and the login hand-off's key
	// travel) are not exported: Envoy's http.url is rewritten without
	// it, the services record paths only.
	for _, s := range trace {
		if hasStringValue(s.Span, secret) {
			t.Errorf("span %s/%s exports the query string: %v", s.service, s.GetName(), s.GetAttributes())
		}
	}

	byID := map[string]receivedSpan{}
	for _, s := range trace {
		byID[spanID(s.GetSpanId())] = s
	}
	parent := func(s receivedSpan) receivedSpan { return byID[spanID(s.GetParentSpanId())] }
	one := func(service, name string) receivedSpan {
		t.Helper()
		var found []receivedSpan
		for _, s := range trace {
			if s.service == service && s.GetName() == name {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d spans %q of %s in the trace, want 1:\n%s", len(found), name, service, describe(trace))
		}
		return found[0]
	}
	// descendsFrom: s's parent chain within Envoy reaches the ingress span.
	envoyChild := func(s receivedSpan, what string) receivedSpan {
		t.Helper()
		p := parent(s)
		if p.Span == nil || p.service != "wsedge-edge" {
			t.Fatalf("%s: parent %x is not one of Envoy's spans:\n%s", what, s.GetParentSpanId(), describe(trace))
		}
		if spanID(p.GetParentSpanId()) != spanID(ingress.GetSpanId()) {
			t.Fatalf("%s: Envoy's span %q is not a child of the request span:\n%s", what, p.GetName(), describe(trace))
		}
		return p
	}

	t.Logf("trace:\n%s", describe(trace))
	check := one("wsedge-authz", "envoy.service.auth.v3.Authorization/Check")
	if check.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("authz Check span kind %v", check.GetKind())
	}
	envoyChild(check, "authz's Check span")
	for _, step := range []string{"authz.verify_token", "authz.issue_token"} {
		if s := one("wsedge-authz", step); spanID(s.GetParentSpanId()) != spanID(check.GetSpanId()) {
			t.Errorf("%s is not a child of authz's Check span:\n%s", step, describe(trace))
		}
	}
	issue := one("wsedge-authz", "authz.issue_token")
	if s := one("wsedge-authz", "primary issue-signed-app-token"); spanID(s.GetParentSpanId()) != spanID(issue.GetSpanId()) || s.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("the issue call to the primary is not a client span under authz.issue_token:\n%s", describe(trace))
	}

	request := one("wsedge-dialer", "dialer subdomain")
	if request.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("dialer request span kind %v", request.GetKind())
	}
	upstream := envoyChild(request, "the dialer's request span")
	if upstream.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("Envoy's span %q before the dialer is not its upstream (client) span", upstream.GetName())
	}
	if dial := one("wsedge-dialer", "tailnet.dial"); spanID(dial.GetParentSpanId()) != spanID(request.GetSpanId()) {
		t.Errorf("tailnet.dial is not a child of the dialer's request span:\n%s", describe(trace))
	}

	// A request that arrives with a traceparent (a traced client, or a
	// proxy in front of Envoy) is continued in that trace.
	const clientTrace, clientSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	a = fetch(fp.plainClient(t), "http://"+echoHost+"/client-traced", http.Header{
		"Coder-Session-Token": {session},
		"Traceparent":         {"00-" + clientTrace + "-" + clientSpan + "-01"},
	})
	if a.status != http.StatusOK {
		t.Fatalf("client-traced request: %s", a)
	}
	waitFor(t, 30*time.Second, "the client's trace continued by Envoy and the dialer", func() (bool, string) {
		var edge, dialer bool
		var in []receivedSpan
		for _, s := range recv.snapshot() {
			if hex.EncodeToString(s.GetTraceId()) != clientTrace {
				continue
			}
			in = append(in, s)
			edge = edge || (s.service == "wsedge-edge" && spanID(s.GetParentSpanId()) == clientSpan)
			dialer = dialer || s.service == "wsedge-dialer"
		}
		return edge && dialer, describe(in)
	})
}

func hasName(spans []receivedSpan, name string) bool {
	for _, s := range spans {
		if s.GetName() == name {
			return true
		}
	}
	return false
}

// describe lists spans as service/name id <- parent, for failure messages.
func describe(spans []receivedSpan) string {
	lines := make([]string, 0, len(spans))
	for _, s := range spans {
		lines = append(lines, fmt.Sprintf("  %s/%s %s <- %s (%v)", s.service, s.GetName(), spanID(s.GetSpanId()), spanID(s.GetParentSpanId()), s.GetKind()))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestWebsocketSpansEndWhileItIsOpen: an app websocket through Envoy does
// not keep wsedge's spans open: while the socket is still open, authz's
// Check and the dialer's request span (ended at the 101) have been
// exported.
func TestWebsocketSpansEndWhileItIsOpen(t *testing.T) {
	recv, endpoint := startOTLPReceiver(t)
	fp := startEdge(t, WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))), WithDev(func(c *devstack.DevConfig) {
		c.OTLPEndpoint = endpoint
	}))
	session := fp.newSession(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, res, err := websocket.Dial(ctx, "ws://"+echoHost+"/ws-traced", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: fp.dial}},
		HTTPHeader: http.Header{"Coder-Session-Token": {session}},
	})
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		t.Fatalf("echo websocket: %v (status %d)", err, status)
	}
	defer c.CloseNow()
	s := &appSocket{c: c}
	if err := s.echo(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "authz's and the dialer's spans of the open websocket", func() (bool, string) {
		var request receivedSpan
		all := recv.snapshot()
		for _, s := range all {
			if s.service == "wsedge-dialer" && s.GetName() == "dialer subdomain" {
				request = s
			}
		}
		if request.Span == nil {
			return false, describe(all)
		}
		var in []receivedSpan
		for _, s := range all {
			if string(s.GetTraceId()) == string(request.GetTraceId()) {
				in = append(in, s)
			}
		}
		// (ext_proc does not run for this request: Envoy's fast path skips
		// it without Origin, and the dialer applies the response policy.)
		return hasName(in, "envoy.service.auth.v3.Authorization/Check") && hasName(in, "tailnet.dial"), describe(in)
	})
	if err := s.echo(ctx, "still open"); err != nil {
		t.Fatalf("the websocket closed: %v", err)
	}
}
