// Package envoyrun runs a real Envoy process: it writes the bootstrap,
// starts Envoy with its logs in a directory, waits until the admin endpoint
// says LIVE, finds the bound address of listeners on port 0 and stops the
// process (SIGTERM, then SIGKILL). `wsedge dev` and the tests use it.
package envoyrun

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
	"syscall"
	"time"
)

// BinEnv names the environment variable that overrides the Envoy binary.
const BinEnv = "WSEDGE_ENVOY_BIN"

// DefaultReadyTimeout bounds Envoy's start-up on a loaded 2-core machine.
const DefaultReadyTimeout = 60 * time.Second

// ErrNoBinary reports that no Envoy binary was found.
var ErrNoBinary = errors.New("envoyrun: no Envoy binary")

// FindBinary is the Envoy to run: $WSEDGE_ENVOY_BIN; else .tools/bin/envoy
// in the first of dirs (and their parents) that has one; else envoy on
// $PATH.
func FindBinary(dirs ...string) (string, error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		if err := checkExecutable(bin); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %v", ErrNoBinary, BinEnv, bin, err)
		}
		return bin, nil
	}
	for _, d := range dirs {
		for dir := d; ; {
			bin := filepath.Join(dir, ".tools", "bin", "envoy")
			if checkExecutable(bin) == nil {
				return bin, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if bin, err := exec.LookPath("envoy"); err == nil {
		return bin, nil
	}
	return "", fmt.Errorf("%w: set %s, run `make setup` in the repository, or put envoy on PATH", ErrNoBinary, BinEnv)
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// Version is the version line of `envoy --version`, e.g.
// "<sha>/1.40.0/Clean/RELEASE/BoringSSL".
func Version(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", bin, err, out)
	}
	v := strings.TrimSpace(string(out))
	v = strings.TrimSpace(strings.TrimPrefix(v, bin))
	v = strings.TrimSpace(strings.TrimPrefix(v, "version:"))
	return v, nil
}

// Validate runs `envoy --mode validate` on a bootstrap written in dir and
// returns Envoy's output, with an error when Envoy rejects it.
func Validate(ctx context.Context, bin, dir string, bootstrap []byte) (string, error) {
	path := filepath.Join(dir, "envoy-validate.yaml")
	if err := os.WriteFile(path, bootstrap, 0o600); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", path, "-l", "warn", "--use-dynamic-base-id").CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("envoy --mode validate: %w", err)
	}
	return string(out), nil
}

// Options configure Start.
type Options struct {
	// Binary is the Envoy executable (see FindBinary).
	Binary string
	// Bootstrap is the YAML configuration.
	Bootstrap []byte
	// Dir receives envoy.yaml, envoy.log, stdout.log and admin.addr.
	Dir string
	// Concurrency is Envoy's worker count; 0 means 1.
	Concurrency int
	// LogLevel is Envoy's log level; "" means info.
	LogLevel string
	// ReadyTimeout bounds the wait for LIVE; 0 means DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// Process is a running Envoy.
type Process struct {
	// AdminURL is http://<admin address>, read from --admin-address-path.
	AdminURL string
	// Dir holds the bootstrap and the logs.
	Dir string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's result, set before exited closes
}

// Start runs Envoy and waits until its admin endpoint answers /ready with
// LIVE. The bootstrap should put the admin endpoint on a loopback address;
// port 0 is fine, Envoy reports the address it bound. On failure the
// process is stopped and the error names the log file.
func Start(ctx context.Context, opts Options) (*Process, error) {
	if opts.Concurrency == 0 {
		opts.Concurrency = 1
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(opts.Dir, "envoy.yaml")
	if err := os.WriteFile(cfgPath, opts.Bootstrap, 0o600); err != nil {
		return nil, fmt.Errorf("envoyrun: write bootstrap: %w", err)
	}
	stdout, err := os.Create(filepath.Join(opts.Dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	defer stdout.Close() // the child holds its own descriptor
	p := &Process{Dir: opts.Dir, exited: make(chan struct{})}
	p.cmd = exec.Command(opts.Binary,
		"-c", cfgPath,
		"--use-dynamic-base-id",
		"--concurrency", fmt.Sprint(opts.Concurrency),
		"-l", opts.LogLevel,
		"--log-path", p.LogPath(),
		"--admin-address-path", filepath.Join(opts.Dir, "admin.addr"),
		"--file-flush-interval-msec", "100",
		"--drain-time-s", "1",
		"--parent-shutdown-time-s", "2",
	)
	p.cmd.Stdout = stdout
	p.cmd.Stderr = stdout
	// Envoy dies with us even if we are killed without a chance to stop it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("envoyrun: start %s: %w", opts.Binary, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(ctx, opts.ReadyTimeout); err != nil {
		p.Stop()
		return nil, fmt.Errorf("envoyrun: Envoy not ready (log: %s): %w", p.LogPath(), err)
	}
	return p, nil
}

// LogPath is Envoy's own log file.
func (p *Process) LogPath() string { return filepath.Join(p.Dir, "envoy.log") }

// StdoutPath is where Envoy's stdout and stderr go (the access log when it
// is written to stdout).
func (p *Process) StdoutPath() string { return filepath.Join(p.Dir, "stdout.log") }

// Exited is closed once the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the process's exit error once Exited is closed.
func (p *Process) Err() error {
	<-p.exited
	return p.err
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop ends Envoy gracefully (SIGTERM), then forcibly after 5 s, and waits
// for it to be gone.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *Process) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("envoy exited early: %v", p.err)
		default:
		}
		if p.AdminURL == "" {
			if b, err := os.ReadFile(filepath.Join(p.Dir, "admin.addr")); err == nil && len(bytes.TrimSpace(b)) > 0 {
				p.AdminURL = "http://" + strings.TrimSpace(string(b))
			}
		}
		if p.AdminURL != "" {
			if body, status, err := p.AdminGet(ctx, "/ready"); err == nil && status == http.StatusOK && strings.TrimSpace(body) == "LIVE" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no LIVE from admin /ready: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AdminGet fetches an admin path (e.g. "/stats?filter=ext_authz").
func (p *Process) AdminGet(ctx context.Context, path string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.AdminURL+path, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return string(b), resp.StatusCode, err
}

// ListenerAddr is the bound address of the named listener, as reported by
// the admin endpoint (this resolves port 0 without racing anyone for a
// port).
func (p *Process) ListenerAddr(ctx context.Context, name string) (netip.AddrPort, error) {
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
	body, status, err := p.AdminGet(ctx, "/listeners?format=json")
	if err != nil || status != http.StatusOK {
		return netip.AddrPort{}, fmt.Errorf("envoyrun: admin /listeners: status %d: %v", status, err)
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return netip.AddrPort{}, fmt.Errorf("envoyrun: admin /listeners: %w", err)
	}
	for _, l := range out.ListenerStatuses {
		if l.Name == name {
			a, err := netip.ParseAddr(l.LocalAddress.SocketAddress.Address)
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("envoyrun: listener %s address: %w", name, err)
			}
			return netip.AddrPortFrom(a, l.LocalAddress.SocketAddress.PortValue), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("envoyrun: Envoy has no listener %q", name)
}
