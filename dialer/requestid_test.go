package dialer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// logLines collects JSON log lines.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestLogLinesCarryEnvoysRequestID: every line the dialer logs about a
// request names the X-Request-Id Envoy gave it, as Envoy's access log
// does, so the three logs correlate.
func TestLogLinesCarryEnvoysRequestID(t *testing.T) {
	var logs logLines
	e := newEnv(t, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}).start()
	appURL := "http://" + testAccessHost + "/@alice/dev.main/apps/code/"

	// No token: refused (401) with a warning.
	res := e.do(http.MethodGet, appURL, "", http.Header{RequestIDHeader: {"11111111-aaaa-4bbb-8ccc-000000000001"}})
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", res.StatusCode)
	}
	// A valid token for an app whose port nobody listens on: 502.
	res = e.do(http.MethodGet, appURL, e.token(pathAppRequest("code"), "http://127.0.0.1:8080"),
		http.Header{RequestIDHeader: {"11111111-aaaa-4bbb-8ccc-000000000002"}})
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("dead app: %d", res.StatusCode)
	}
	// Without the header, lines still have the key (empty).
	res = e.do(http.MethodGet, "http://"+testAccessHost+"/healthz", "", nil)
	res.Body.Close()
	// A client-made giant ID is cut.
	res = e.do(http.MethodGet, "http://"+testAccessHost+"/healthz", "", http.Header{RequestIDHeader: {strings.Repeat("x", 4096)}})
	res.Body.Close()

	want := map[string]string{
		"dialer: refused app token":       "11111111-aaaa-4bbb-8ccc-000000000001",
		"dialer: proxying to app failed":  "11111111-aaaa-4bbb-8ccc-000000000002",
		"dialer: request/401":             "11111111-aaaa-4bbb-8ccc-000000000001",
		"dialer: request/502":             "11111111-aaaa-4bbb-8ccc-000000000002",
		"dialer: request/200 (no header)": "",
		"dialer: request/200 (giant)":     strings.Repeat("x", maxRequestIDLen),
	}
	got := map[string]string{}
	for _, m := range logs.records(t) {
		msg, _ := m["msg"].(string)
		if !strings.HasPrefix(msg, "dialer: ") {
			continue
		}
		id, ok := m["request_id"].(string)
		if !ok {
			t.Errorf("line %q has no request_id: %v", msg, m)
			continue
		}
		if msg == "dialer: request" {
			msg += "/" + fmt.Sprint(m["status"])
			if msg == "dialer: request/200" {
				msg += map[bool]string{true: " (no header)", false: " (giant)"}[id == ""]
			}
		}
		got[msg] = id
	}
	for msg, id := range want {
		if g, ok := got[msg]; !ok || g != id {
			t.Errorf("%s: request_id %q (logged %v), want %q", msg, g, ok, id)
		}
	}
}
