package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestCheckLogCarriesEnvoysRequestID: the check line names the request by
// the x-request-id Envoy logs and forwards to the dialer, not by Envoy's
// stream id, so one request can be followed through all three logs.
func TestCheckLogCarriesEnvoysRequestID(t *testing.T) {
	f := newFixture(t, nil)
	var buf bytes.Buffer
	f.svc.log = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g := &grpcServer{svc: f.svc, metrics: newMetrics(nil)}

	check := func(headers map[string]string) map[string]any {
		t.Helper()
		buf.Reset()
		_, err := g.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7"},
			}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id:      "11873622185383264719",
				Method:  "GET",
				Host:    accessHost,
				Path:    "/healthz",
				Scheme:  "https",
				Headers: headers,
			}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "check" {
				return m
			}
		}
		t.Fatalf("no check line in %q", buf.String())
		return nil
	}

	const id = "5f2b3c1e-8a9d-4c7b-b1e2-3d4f5a6b7c8d"
	if got := check(map[string]string{":path": "/healthz", "x-request-id": id})["request_id"]; got != id {
		t.Errorf("request_id %v, want Envoy's x-request-id %s", got, id)
	}
	// Without the header (Envoy configured not to generate one), the
	// stream id is better than nothing.
	if got := check(map[string]string{":path": "/healthz"})["request_id"]; got != "11873622185383264719" {
		t.Errorf("request_id %v without x-request-id, want the stream id", got)
	}
	long := strings.Repeat("a", 1000)
	if got, _ := check(map[string]string{"x-request-id": long})["request_id"].(string); len(got) != maxRequestIDLen {
		t.Errorf("a %d-byte x-request-id logged as %d bytes, want it cut to %d", len(long), len(got), maxRequestIDLen)
	}
}
