package dialer

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// A proxied app request continues Envoy's traceparent: the request span's
// parent is Envoy's span, the tailnet dial is its child, the app sees the
// dialer's span as parent, and the request span has ended once the
// headers are out while the body is still streaming.
func TestRequestSpanEndsAtHeaders(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	e := newEnv(t, func(o *Options) { o.TracerProvider = tp }).start()

	release := make(chan struct{})
	appSaw := make(chan string, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appSaw <- r.Header.Get("Traceparent")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		<-release
		_, _ = io.WriteString(w, "last\n")
	}))
	defer app.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	e.agents.set(8080, app.Listener.Addr().String())

	const envoyTrace, envoySpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tok := e.token(subdomainAppRequest("code"), "http://127.0.0.1:8080")
	resp := e.do("GET", "http://code--main--dev--alice.apps.example.com/stream", tok,
		http.Header{"Traceparent": {"00-" + envoyTrace + "-" + envoySpan + "-01"}})
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}

	// The body is still open: the request span must already be over.
	var request, dial sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for request == nil && time.Now().Before(deadline) {
		for _, s := range rec.Ended() {
			switch s.Name() {
			case spanRequestPrefix + "subdomain":
				request = s
			case spanDialAgent:
				dial = s
			}
		}
		if request == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if request == nil {
		t.Fatalf("no ended request span while the body streams; ended: %v", spanNames(rec.Ended()))
	}
	if request.SpanKind() != trace.SpanKindServer || request.SpanContext().TraceID().String() != envoyTrace || request.Parent().SpanID().String() != envoySpan {
		t.Fatalf("request span kind %v trace %s parent %s", request.SpanKind(), request.SpanContext().TraceID(), request.Parent().SpanID())
	}
	if dial == nil || dial.Parent().SpanID() != request.SpanContext().SpanID() {
		t.Fatalf("dial span %v not a child of the request span", dial)
	}
	want := "00-" + envoyTrace + "-" + request.SpanContext().SpanID().String() + "-01"
	if got := <-appSaw; got != want {
		t.Fatalf("app saw traceparent %q, want the dialer's span %q", got, want)
	}
	close(release)
	if rest, _ := io.ReadAll(br); string(rest) != "last\n" {
		t.Fatalf("rest of body %q", rest)
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// Without a tracer provider, Envoy's traceparent reaches the app
// untouched.
func TestNoTracingPassesTraceparent(t *testing.T) {
	e := newEnv(t, nil).start()
	appSaw := make(chan string, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appSaw <- r.Header.Get("Traceparent")
	}))
	defer app.Close()
	e.agents.set(8080, app.Listener.Addr().String())
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tok := e.token(subdomainAppRequest("code"), "http://127.0.0.1:8080")
	resp := e.do("GET", "http://code--main--dev--alice.apps.example.com/", tok, http.Header{"Traceparent": {tp}})
	resp.Body.Close()
	if got := <-appSaw; got != tp {
		t.Fatalf("app saw %q, want %q", got, tp)
	}
}

// A web terminal's request span ends with the 101, and the bridge's
// set-up (dial and init frame) is its own short span with the dial
// inside, while the terminal itself stays open.
func TestTerminalSpansEndWhileTheSessionRuns(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	e := newEnv(t, func(o *Options) { o.TracerProvider = tp }).start()
	_, addr := startFakePTY(t, 0)
	e.agents.set(ReconnectingPTYPort, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := e.dialTerminal(ctx, "reconnect="+testAgentID.String(), "https://"+testDashboardHost, e.token(terminalRequest(testAgentID), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := readN(ctx, t, c, 2); string(got) != "$ " {
		t.Fatalf("greeting %q", got)
	}

	// The websocket is open; every span must already have ended.
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = s
	}
	request, bridge, dial := byName[spanRequestPrefix+"terminal"], byName[spanPTYBridge], byName[spanDialAgent]
	if request == nil || bridge == nil || dial == nil {
		t.Fatalf("ended spans %v, want the request, bridge and dial spans while the terminal is open", spanNames(rec.Ended()))
	}
	if bridge.Parent().SpanID() != request.SpanContext().SpanID() || dial.Parent().SpanID() != bridge.SpanContext().SpanID() {
		t.Fatalf("parents: bridge %s dial %s; request %s bridge %s", bridge.Parent().SpanID(), dial.Parent().SpanID(), request.SpanContext().SpanID(), bridge.SpanContext().SpanID())
	}
	for _, a := range request.Attributes() {
		if a.Key == "http.response.status_code" && a.Value.AsInt64() != http.StatusSwitchingProtocols {
			t.Fatalf("request span status %d, want 101", a.Value.AsInt64())
		}
	}
}
