package e2e

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// jsonLines parses the JSON log lines written to b.
func jsonLines(b *syncBuffer) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// TestOneRequestIDInEnvoyAuthzAndDialerLogs: a request can be followed
// from Envoy's access log through authz's check line to the dialer's line
// by one id, Envoy's x-request-id (a client's own is not kept).
func TestOneRequestIDInEnvoyAuthzAndDialerLogs(t *testing.T) {
	var logs syncBuffer
	fp := startEdge(t, WithDev(logEveryRequest), WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	session := fp.newSession(t)
	a := fetch(fp.plainClient(t), "http://"+codeHost+"/echo?marker=correlate", http.Header{
		"Coder-Session-Token": {session},
		"X-Request-Id":        {"client-chosen"},
	})
	if a.status != http.StatusOK {
		t.Fatalf("app request: %s", a)
	}

	// Envoy's access log line for the request.
	line := fp.accessLogLine(t, "the access log line", func(m map[string]any) bool { return m["authority"] == codeHost && m["path"] == "/echo" })
	id, _ := line["request_id"].(string)
	authzLatency := line["authz_check_us"]
	if id == "" || id == "client-chosen" {
		t.Fatalf("access log request_id %q, want one Envoy generated", id)
	}
	// The same line says how long the ext_authz Check took (ext_authz
	// filter state, rendered as a string of digits), in microseconds.
	if s, ok := authzLatency.(string); !ok || func() bool { n, err := strconv.Atoi(s); return err != nil || n <= 0 }() {
		t.Errorf("access log authz_check_us = %#v, want a positive number of microseconds", authzLatency)
	}

	var authzSaw, dialerSaw bool
	for _, m := range jsonLines(&logs) {
		if m["request_id"] != id {
			continue
		}
		switch {
		case m["component"] == "authz" && m["msg"] == "check":
			authzSaw = true
		case m["component"] == "dialer" && m["msg"] == "dialer: request":
			dialerSaw = true
		}
	}
	if !authzSaw || !dialerSaw {
		t.Errorf("request_id %s: in authz's check line %v, in the dialer's request line %v", id, authzSaw, dialerSaw)
	}
}
