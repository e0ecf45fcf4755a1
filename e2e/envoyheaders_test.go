package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	devagent "github.com/wsedge/wsedge/dev/agent"
)

// TestResponsesDoNotNameEnvoy: a browser gets an app's own Server header,
// untouched, and nothing Envoy adds of its own accord (Server: envoy over
// the app's, x-envoy-upstream-service-time) — on the warm path, on a
// websocket's 101, on authz's answers and on Envoy's own error pages.
// Coder's proxy sends none of these.
func TestResponsesDoNotNameEnvoy(t *testing.T) {
	e := startEdge(t, WithDev(), WithWarmCookies())
	check := func(t *testing.T, what string, h http.Header, server string) {
		t.Helper()
		if got := h.Values("Server"); server == "" && len(got) != 0 || server != "" && (len(got) != 1 || got[0] != server) {
			t.Errorf("%s: Server %q, want %q", what, got, server)
		}
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "x-envoy-") {
				t.Errorf("%s: Envoy's %s: %q reached the browser", what, k, h.Values(k))
			}
		}
	}

	res, _ := e.roundTrip(t, http.MethodGet, "http://"+codeHost+"/echo", http.Header{"Cookie": {e.codeCookie}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("warm request: status %d", res.StatusCode)
	}
	check(t, "warm request", res.Header, devagent.DemoAppServer)

	res, _ = e.roundTrip(t, http.MethodGet, "http://"+codeHost+"/echo", http.Header{"Cookie": {e.codeCookie}, "Origin": {"http://" + codeHost}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("request with Origin: status %d", res.StatusCode)
	}
	check(t, "request with Origin (ext_proc's route)", res.Header, devagent.DemoAppServer)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, wsRes, err := e.dialWebsocket(ctx, "ws://"+codeHost+"/ws", http.Header{"Cookie": {e.codeCookie}})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	check(t, "websocket 101", wsRes.Header, devagent.DemoAppServer)
	_ = ws.CloseNow()

	res, _ = e.roundTrip(t, http.MethodGet, "http://"+accessHost+"/@alice/dev.main/apps/code/", nil)
	if res.StatusCode/100 != 3 {
		t.Fatalf("anonymous request: status %d, want authz's redirect to the login", res.StatusCode)
	}
	check(t, "authz's redirect", res.Header, "")

	// Envoy's own answer to a request it cannot parse.
	conn, err := e.dial(ctx, "tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: " + accessHost + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	res, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("two Content-Lengths: status %d, want Envoy's 400", res.StatusCode)
	}
	check(t, "Envoy's 400", res.Header, "")
}
