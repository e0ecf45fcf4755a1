package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/internal/buildinfo"
)

// TestResponseHeaders: a browser gets the response headers Coder's proxy
// gives it and none of Envoy's. An app's own Server header arrives
// untouched and Envoy adds none (no "Server: envoy", no
// x-envoy-upstream-service-time); every answer but the latency probe's
// carries X-Coder-Request-Id, Envoy's request ID, the one in its access
// log, which the app gets as X-Request-Id (and nothing of Envoy's
// x-envoy-*); answers outside subdomain apps carry X-Coder-Build-Version. Checked
// on the warm path, ext_proc's route, a websocket's 101, authz's answer
// and Envoy's own error page.
func TestResponseHeaders(t *testing.T) {
	e := startEdge(t, WithDev(logEveryRequest), WithWarmCookies())
	seen := map[string]string{} // request ID → what answered
	check := func(t *testing.T, what string, h http.Header, server string, pathSide, hasID bool) {
		t.Helper()
		if got := h.Values("Server"); server == "" && len(got) != 0 || server != "" && (len(got) != 1 || got[0] != server) {
			t.Errorf("%s: Server %q, want %q", what, got, server)
		}
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "x-envoy-") {
				t.Errorf("%s: Envoy's %s: %q reached the browser", what, k, h.Values(k))
			}
		}
		ids := h.Values("X-Coder-Request-Id")
		switch {
		case !hasID && len(ids) != 0:
			t.Errorf("%s: X-Coder-Request-Id %q, want none", what, ids)
		case hasID && len(ids) != 1:
			t.Errorf("%s: X-Coder-Request-Id %q, want one", what, ids)
		case hasID:
			if _, err := uuid.Parse(ids[0]); err != nil {
				t.Errorf("%s: X-Coder-Request-Id %q is not Envoy's UUID: %v", what, ids[0], err)
			}
			if prev, ok := seen[ids[0]]; ok {
				t.Errorf("%s: X-Coder-Request-Id %s was %s's too", what, ids[0], prev)
			}
			seen[ids[0]] = what
		}
		version := h.Values("X-Coder-Build-Version")
		if pathSide && (len(version) != 1 || version[0] != buildinfo.Version()) {
			t.Errorf("%s: X-Coder-Build-Version %q, want %q", what, version, buildinfo.Version())
		}
		if !pathSide && len(version) != 0 {
			t.Errorf("%s: X-Coder-Build-Version %q, want none (subdomain apps get none)", what, version)
		}
	}
	warm := http.Header{"Cookie": {e.codeCookie}}

	res, body := e.roundTrip(t, http.MethodGet, "http://"+codeHost+"/echo", warm)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("warm request: status %d", res.StatusCode)
	}
	check(t, "warm request", res.Header, devagent.DemoAppServer, false, true)
	warmID := res.Header.Get("X-Coder-Request-Id")
	// The app, for its part, gets the same ID and nothing else of Envoy's.
	var got devagent.Received
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("echo: %v: %s", err, body)
	}
	for k, v := range got.Headers {
		if strings.HasPrefix(strings.ToLower(k), "x-envoy-") {
			t.Errorf("the app received Envoy's %s: %q", k, v)
		}
	}
	if id := got.Headers["X-Request-Id"]; len(id) != 1 || id[0] != warmID {
		t.Errorf("the app received X-Request-Id %q, want the browser's X-Coder-Request-Id %q", id, warmID)
	}

	res, _ = e.roundTrip(t, http.MethodGet, "http://"+codeHost+"/echo", http.Header{"Cookie": {e.codeCookie}, "Origin": {"http://" + codeHost}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("request with Origin: status %d", res.StatusCode)
	}
	check(t, "request with Origin (ext_proc's route)", res.Header, devagent.DemoAppServer, false, true)

	res, _ = e.roundTrip(t, http.MethodGet, "http://"+codeHost+"/latency-check", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("latency probe: status %d", res.StatusCode)
	}
	check(t, "latency probe", res.Header, "", false, false)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, wsRes, err := e.dialWebsocket(ctx, "ws://"+codeHost+"/ws", warm)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	check(t, "websocket 101", wsRes.Header, devagent.DemoAppServer, false, true)
	_ = ws.CloseNow()

	res, _ = e.roundTrip(t, http.MethodGet, "http://"+accessHost+"/@alice/dev.main/apps/code/", nil)
	if res.StatusCode/100 != 3 {
		t.Fatalf("anonymous path-app request: status %d, want authz's redirect to the login", res.StatusCode)
	}
	check(t, "authz's redirect", res.Header, "", true, true)

	res, _ = e.roundTrip(t, http.MethodGet, "http://"+accessHost+"/healthz", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: status %d", res.StatusCode)
	}
	check(t, "/healthz", res.Header, "", true, true)

	// Envoy's own answer to a request it cannot parse (no route, no ID).
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
	check(t, "Envoy's 400", res.Header, "", false, false)

	// The ID a browser sees finds the request's access log line.
	m := e.accessLogLine(t, "the warm request's access log line, by its X-Coder-Request-Id", func(m map[string]any) bool { return m["request_id"] == warmID })
	if m["path"] != "/echo" || m["authority"] != codeHost {
		t.Errorf("access log line of %s: %v, want the warm GET /echo on %s", warmID, m, codeHost)
	}
}
