package testutil

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wsedge/wsedge/internal/envoyrun"
)

// EnvoyBinEnv names the environment variable that overrides the Envoy binary.
const EnvoyBinEnv = envoyrun.BinEnv

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
	v, err := envoyrun.Version(context.Background(), bin)
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	versions.Store(bin, v)
	return v
}

// ValidateEnvoyConfig runs `envoy --mode validate` on a bootstrap and returns
// Envoy's output and an error when Envoy rejects it.
func ValidateEnvoyConfig(t testing.TB, bootstrap []byte) (string, error) {
	t.Helper()
	bin := EnvoyBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), envoyReadyTimeout)
	defer cancel()
	return envoyrun.Validate(ctx, bin, t.TempDir(), bootstrap)
}

// EnvoyProc is a running Envoy started by StartEnvoy.
type EnvoyProc struct {
	// AdminURL is http://<admin address>, read from --admin-address-path.
	AdminURL string
	// Version is Envoy's version line.
	Version string

	p *envoyrun.Process
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
	e := &EnvoyProc{Version: EnvoyVersion(t, bin)}
	t.Logf("testutil: starting Envoy %s", e.Version)
	p, err := envoyrun.Start(context.Background(), envoyrun.Options{
		Binary:       bin,
		Bootstrap:    bootstrap,
		Dir:          t.TempDir(),
		ReadyTimeout: envoyReadyTimeout,
		// WSEDGE_ENVOY_LOG_LEVEL=debug shows, among much else, the headers
		// Envoy sends upstream.
		LogLevel: os.Getenv("WSEDGE_ENVOY_LOG_LEVEL"),
	})
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	e.p, e.AdminURL = p, p.AdminURL
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("testutil: Envoy log:\n%s", e.Log())
			t.Logf("testutil: Envoy stdout (access log):\n%s", e.Stdout())
		}
	})
	return e
}

// AdminGet fetches an admin path (e.g. "/stats?filter=ext_authz") and fails
// the test unless it answers 200.
func (e *EnvoyProc) AdminGet(t testing.TB, path string) string {
	t.Helper()
	body, status, err := e.p.AdminGet(context.Background(), path)
	if err != nil || status != http.StatusOK {
		t.Fatalf("testutil: envoy admin %s: status %d, err %v", path, status, err)
	}
	return body
}

// ListenerAddr is the bound address of the named listener, as reported by
// the admin endpoint (this resolves port 0 without racing anyone for a port).
func (e *EnvoyProc) ListenerAddr(t testing.TB, name string) netip.AddrPort {
	t.Helper()
	a, err := e.p.ListenerAddr(context.Background(), name)
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	return a
}

// Pid is the Envoy process ID.
func (e *EnvoyProc) Pid() int { return e.p.Pid() }

// Log is Envoy's own log so far.
func (e *EnvoyProc) Log() string { return readFile(e.p.LogPath()) }

// Stdout is what Envoy wrote to stdout and stderr so far (the access log when
// it goes to stdout).
func (e *EnvoyProc) Stdout() string { return readFile(e.p.StdoutPath()) }

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}
