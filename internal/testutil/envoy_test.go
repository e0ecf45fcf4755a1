package testutil

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fatalTB records the first Fatalf and unwinds with errFatal instead of
// ending the real test.
type fatalTB struct {
	testing.TB
	msg string
}

var errFatal = errors.New("fatal")

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(errFatal)
}

func (f *fatalTB) Helper() {}

func expectFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != errFatal {
				panic(r)
			}
		}()
		fn(f)
	}()
	if f.msg == "" {
		t.Fatal("expected the helper to fail the test")
	}
	return f.msg
}

func TestEnvoyBinaryMissingFailsWithHint(t *testing.T) {
	t.Setenv(EnvoyBinEnv, "/nonexistent/envoy")
	msg := expectFatal(t, func(tb testing.TB) { EnvoyBinary(tb) })
	if !strings.Contains(msg, "make setup") || !strings.Contains(msg, "/nonexistent/envoy") {
		t.Fatalf("message %q lacks the path or the hint", msg)
	}
}

const directResponseBootstrap = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: probe
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: probe
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                direct_response: {status: 200, body: {inline_string: "harness ok"}}
`

func TestStartEnvoyServesAndStops(t *testing.T) {
	var pid int
	t.Run("run", func(t *testing.T) {
		e := StartEnvoy(t, []byte(directResponseBootstrap))
		pid = e.Pid()
		if !strings.Contains(e.Version, "/1.40.0/") {
			t.Errorf("version %q", e.Version)
		}
		addr := e.ListenerAddr(t, "probe")
		if addr.Port() == 0 || !addr.Addr().IsLoopback() {
			t.Fatalf("listener address %s", addr)
		}
		resp, err := http.Get("http://" + addr.String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "harness ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(e.Log(), "starting main dispatch loop") {
			if time.Now().After(deadline) {
				t.Fatalf("Envoy log not captured:\n%s", e.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	if pid == 0 {
		t.Fatal("no Envoy started")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("Envoy %d still running after its test ended (kill 0: %v)", pid, err)
	}
}

func TestStartEnvoyBadConfigFails(t *testing.T) {
	msg := expectFatal(t, func(tb testing.TB) {
		StartEnvoy(tb, []byte("static_resources: {listeners: [{name: x}]}\n"))
	})
	if !strings.Contains(msg, "exited early") {
		t.Fatalf("message %q", msg)
	}
}

func TestValidateEnvoyConfig(t *testing.T) {
	if out, err := ValidateEnvoyConfig(t, []byte(directResponseBootstrap)); err != nil {
		t.Fatalf("valid bootstrap rejected: %v\n%s", err, out)
	}
	bad := strings.Replace(directResponseBootstrap, "prefix: /", "safe_regex: {regex: '('}", 1)
	out, err := ValidateEnvoyConfig(t, []byte(bad))
	if err == nil {
		t.Fatalf("invalid regex accepted:\n%s", out)
	}
	if !strings.Contains(out, "missing )") {
		t.Errorf("Envoy's complaint about the regex is missing:\n%s", out)
	}
}
