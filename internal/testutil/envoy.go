package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvoyBinEnv names the environment variable that overrides the Envoy binary.
const EnvoyBinEnv = "WSEDGE_ENVOY_BIN"

// envoyReadyTimeout bounds Envoy's start-up on a loaded 2-core machine.
const envoyReadyTimeout = 60 * time.Second

// RepoRoot is the directory holding the module's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("testutil: getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("testutil: no go.mod above the test's directory")
		}
		dir = parent
	}
}

// EnvoyBinary is the Envoy to test with: $WSEDGE_ENVOY_BIN, else
// <repo>/.tools/bin/envoy. A missing binary fails the test (never skips it).
func EnvoyBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(EnvoyBinEnv)
	if bin == "" {
		bin = filepath.Join(RepoRoot(t), ".tools", "bin", "envoy")
	}
	fi, err := os.Stat(bin)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("testutil: no Envoy binary at %s (set %s or run `make setup`): %v", bin, EnvoyBinEnv, err)
	}
	return bin
}

var versions sync.Map // binary path → version line

// EnvoyVersion is the first line of `envoy --version`, e.g.
// "<sha>/1.40.0/Clean/RELEASE/BoringSSL".
func EnvoyVersion(t testing.TB, bin string) string {
	t.Helper()
	if v, ok := versions.Load(bin); ok {
		return v.(string)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("testutil: %s --version: %v\n%s", bin, err, out)
	}
	v := strings.TrimSpace(string(out))
	v = strings.TrimSpace(strings.TrimPrefix(v, bin))
	v = strings.TrimSpace(strings.TrimPrefix(v, "version:"))
	versions.Store(bin, v)
	return v
}

// ValidateEnvoyConfig runs `envoy --mode validate` on a bootstrap and returns
// Envoy's output and an error when Envoy rejects it.
func ValidateEnvoyConfig(t testing.TB, bootstrap []byte) (string, error) {
	t.Helper()
	bin := EnvoyBinary(t)
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, bootstrap, 0o600); err != nil {
		t.Fatalf("testutil: write bootstrap: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), envoyReadyTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", path, "-l", "warn", "--use-dynamic-base-id").CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("envoy --mode validate: %w", err)
	}
	return string(out), nil
}

// EnvoyProc is a running Envoy started by StartEnvoy.
type EnvoyProc struct {
	// AdminURL is http://<admin address>, read from --admin-address-path.
	AdminURL string
	// Version is Envoy's version line.
	Version string

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's result, set before exited closes
}

// StartEnvoy runs Envoy with the given bootstrap, waits until its admin
// endpoint answers /ready with LIVE and stops it when the test ends. The
// bootstrap should put the admin endpoint on a loopback address with port 0;
// Envoy reports the chosen address, and listeners on port 0 are found with
// ListenerAddr. On test failure Envoy's log and stdout (the access log) are
// written to t.Log.
func StartEnvoy(t testing.TB, bootstrap []byte) *EnvoyProc {
	t.Helper()
	bin := EnvoyBinary(t)
	e := &EnvoyProc{Version: EnvoyVersion(t, bin), dir: t.TempDir(), exited: make(chan struct{})}
	t.Logf("testutil: starting Envoy %s", e.Version)
	cfgPath := filepath.Join(e.dir, "envoy.yaml")
	if err := os.WriteFile(cfgPath, bootstrap, 0o600); err != nil {
		t.Fatalf("testutil: write bootstrap: %v", err)
	}
	stdout, err := os.Create(filepath.Join(e.dir, "stdout.log"))
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	defer stdout.Close() // the child holds its own descriptor
	e.cmd = exec.Command(bin,
		"-c", cfgPath,
		"--use-dynamic-base-id",
		"--concurrency", "1",
		"-l", "info",
		"--log-path", filepath.Join(e.dir, "envoy.log"),
		"--admin-address-path", filepath.Join(e.dir, "admin.addr"),
		"--file-flush-interval-msec", "100",
		"--drain-time-s", "1",
		"--parent-shutdown-time-s", "2",
	)
	e.cmd.Stdout = stdout
	e.cmd.Stderr = stdout
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("testutil: start envoy: %v", err)
	}
	go func() {
		e.err = e.cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("testutil: Envoy log:\n%s", e.Log())
			t.Logf("testutil: Envoy stdout (access log):\n%s", e.Stdout())
		}
	})
	if err := e.waitReady(); err != nil {
		t.Fatalf("testutil: envoy not ready: %v", err)
	}
	return e
}

// stop ends Envoy gracefully, then forcibly.
func (e *EnvoyProc) stop() {
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(5 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
}

func (e *EnvoyProc) waitReady() error {
	deadline := time.Now().Add(envoyReadyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-e.exited:
			return fmt.Errorf("envoy exited early: %v", e.err)
		default:
		}
		if e.AdminURL == "" {
			if b, err := os.ReadFile(filepath.Join(e.dir, "admin.addr")); err == nil && len(bytes.TrimSpace(b)) > 0 {
				e.AdminURL = "http://" + strings.TrimSpace(string(b))
			}
		}
		if e.AdminURL != "" {
			if body, status, err := e.adminGet("/ready"); err == nil && status == http.StatusOK && strings.TrimSpace(body) == "LIVE" {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("no LIVE from admin /ready within " + envoyReadyTimeout.String())
}

func (e *EnvoyProc) adminGet(path string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.AdminURL+path, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// AdminGet fetches an admin path (e.g. "/stats?filter=ext_authz") and fails
// the test unless it answers 200.
func (e *EnvoyProc) AdminGet(t testing.TB, path string) string {
	t.Helper()
	body, status, err := e.adminGet(path)
	if err != nil || status != http.StatusOK {
		t.Fatalf("testutil: envoy admin %s: status %d, err %v", path, status, err)
	}
	return body
}

// ListenerAddr is the bound address of the named listener, as reported by
// the admin endpoint (this resolves port 0 without racing anyone for a port).
func (e *EnvoyProc) ListenerAddr(t testing.TB, name string) netip.AddrPort {
	t.Helper()
	var out struct {
		ListenerStatuses []struct {
			Name         string `json:"name"`
			LocalAddress struct {
				SocketAddress struct {
					Address   string `json:"address"`
					PortValue uint16 `json:"port_value"`
				} `json:"socket_address"`
			} `json:"local_address"`
		} `json:"listener_statuses"`
	}
	body := e.AdminGet(t, "/listeners?format=json")
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("testutil: envoy /listeners: %v\n%s", err, body)
	}
	for _, l := range out.ListenerStatuses {
		if l.Name == name {
			a, err := netip.ParseAddr(l.LocalAddress.SocketAddress.Address)
			if err != nil {
				t.Fatalf("testutil: listener %s address: %v", name, err)
			}
			return netip.AddrPortFrom(a, l.LocalAddress.SocketAddress.PortValue)
		}
	}
	t.Fatalf("testutil: envoy has no listener %q:\n%s", name, body)
	return netip.AddrPort{}
}

// Pid is the Envoy process ID.
func (e *EnvoyProc) Pid() int { return e.cmd.Process.Pid }

// Log is Envoy's own log so far.
func (e *EnvoyProc) Log() string { return readFile(filepath.Join(e.dir, "envoy.log")) }

// Stdout is what Envoy wrote to stdout and stderr so far (the access log when
// it goes to stdout).
func (e *EnvoyProc) Stdout() string { return readFile(filepath.Join(e.dir, "stdout.log")) }

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}
