package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	devprimary "github.com/wsedge/wsedge/dev/primary"
	"github.com/wsedge/wsedge/internal/testutil"
)

// smokeTimeout bounds each wait of the smoke test on a loaded machine.
const smokeTimeout = 90 * time.Second

// proc is a wsedge process started by the smoke test.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
	err    error // set before exited closes
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startWsedge runs `wsedge <args>` with exactly env (plus PATH and HOME),
// killing it when the test ends and logging its output if the test failed.
func startWsedge(t *testing.T, name string, env map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(buildWsedge(t), args...)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM (what the kubelet sends after preStop) and waits up
// to within for a clean exit.
func (p *proc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("%s: exit after SIGTERM: %v", p.name, p.err)
		}
	case <-time.After(within):
		t.Errorf("%s: still running %s after SIGTERM (the kubelet would kill it)", p.name, within)
	}
}

// waitFor polls ok until it is true, the process exits or smokeTimeout.
func waitFor(t *testing.T, p *proc, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(smokeTimeout)
	for !ok() {
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) before %s", p.name, p.err, what)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s after %s", p.name, what, smokeTimeout)
		}
	}
}

// loopbackSettings turns a pod's WSEDGE_ settings into a loopback run: the
// listeners on free loopback ports, the pod IP on 127.0.0.1, the primary and
// token of the dev primary, and the access URL where the dev primary can poll
// /healthz-report. Everything else (log format, grace, …) is kept.
func loopbackSettings(t *testing.T, env map[string]string, primaryURL, token, accessURL string) (map[string]string, int) {
	t.Helper()
	out := map[string]string{}
	for k, v := range env {
		if strings.HasPrefix(k, "WSEDGE_") {
			out[k] = v
		}
	}
	_, port := listenPort(t, "WSEDGE_LISTEN", env["WSEDGE_LISTEN"])
	newPort := testutil.FreePort(t)
	out["WSEDGE_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", newPort)
	out["WSEDGE_METRICS_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	if _, ok := env["WSEDGE_JWKS_LISTEN"]; ok {
		out["WSEDGE_JWKS_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	}
	out["WSEDGE_PRIMARY_URL"] = primaryURL
	out["WSEDGE_PROXY_TOKEN"] = token
	out["WSEDGE_ACCESS_URL"] = accessURL
	if relay, ok := env["WSEDGE_RELAY_ADDRESS"]; ok {
		want := fmt.Sprintf("http://<status.podIP>:%d", port)
		if relay != want {
			t.Fatalf("relay address %q, want %q", relay, want)
		}
		out["WSEDGE_RELAY_ADDRESS"] = fmt.Sprintf("http://127.0.0.1:%d", newPort)
	}
	return out, newPort
}

// checkJSONLogs: with WSEDGE_LOG_FORMAT=json every line is a JSON object
// with time, level and msg (what a log pipeline parses).
func checkJSONLogs(t *testing.T, p *proc) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	n := 0
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Errorf("%s: log line is not JSON: %q", p.name, sc.Text())
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := line[k]; !ok {
				t.Errorf("%s: log line without %q: %q", p.name, k, sc.Text())
			}
		}
		n++
	}
	if n == 0 {
		t.Errorf("%s logged nothing", p.name)
	}
}

// TestKubernetesSettingsAgainstDevPrimary runs wsedge authz and two dialers
// with the settings of the Kubernetes base, moved to loopback, against the
// dev primary: authz turns SERVING (its readiness probe), the dialers answer
// /healthz (theirs), register with their own relay addresses, the primary
// finds the proxy healthy (authz included), logs are JSON, and SIGTERM stops
// every process cleanly within the pod's termination grace period, dialers
// deregistering.
func TestKubernetesSettingsAgainstDevPrimary(t *testing.T) {
	for _, cmd := range []string{"authz", "dialer"} {
		if _, ok := wsedgeFlags(t, cmd); !ok {
			t.Skipf("wsedge has no %q subcommand yet", cmd)
		}
	}
	o := index(t, baseFromFiles(t).Objs)
	settings := map[string]map[string]string{}
	grace := map[string]time.Duration{}
	for _, name := range []string{"wsedge-authz", "wsedge-dialer"} {
		d := o.deployments[name]
		c := d.Spec.Template.Spec.Containers[0]
		settings[name] = containerEnv(t, name, o, c)
		var preStop time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		grace[name] = time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds)*time.Second - preStop
	}

	ts := httptest.NewUnstartedServer(nil)
	primaryURL := "http://" + ts.Listener.Addr().String()
	pu, _ := url.Parse(primaryURL)
	dev, err := devprimary.New(devprimary.Options{AccessURL: pu, HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = dev.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { _ = dev.Close() })

	// The access URL is what the primary polls; without Envoy here, it is
	// the first dialer itself.
	d1env, d1port := loopbackSettings(t, settings["wsedge-dialer"], primaryURL, dev.ProxyToken(), "")
	accessURL := fmt.Sprintf("http://127.0.0.1:%d", d1port)
	d1env["WSEDGE_ACCESS_URL"] = accessURL
	d2env, d2port := loopbackSettings(t, settings["wsedge-dialer"], primaryURL, dev.ProxyToken(), accessURL)
	aenv, aport := loopbackSettings(t, settings["wsedge-authz"], primaryURL, dev.ProxyToken(), accessURL)
	// The dialers check authz for /healthz-report where it runs here.
	for _, env := range []map[string]string{d1env, d2env} {
		if env["WSEDGE_AUTHZ_ADDR"] == "" {
			t.Fatal("the dialers do not check authz in /healthz-report")
		}
		env["WSEDGE_AUTHZ_ADDR"] = fmt.Sprintf("127.0.0.1:%d", aport)
	}

	authz := startWsedge(t, "authz", aenv, "authz")
	d1 := startWsedge(t, "dialer-1", d1env, "dialer")
	d2 := startWsedge(t, "dialer-2", d2env, "dialer")

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", aport), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, authz, "SERVING", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	client := &http.Client{Timeout: 2 * time.Second}
	for _, d := range []struct {
		p    *proc
		port int
	}{{d1, d1port}, {d2, d2port}} {
		waitFor(t, d.p, "answering /healthz", func() bool {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", d.port))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}

	// Both replicas registered under their own relay address.
	relays := map[string]bool{}
	for _, r := range dev.Replicas() {
		relays[r.RelayAddress] = r.StoppedAt.IsZero()
	}
	for _, want := range []string{d1env["WSEDGE_RELAY_ADDRESS"], d2env["WSEDGE_RELAY_ADDRESS"]} {
		if !relays[want] {
			t.Errorf("no live replica with relay address %s; the primary has %v", want, relays)
		}
	}
	// The primary polls the access URL's /healthz-report and finds the
	// proxy healthy.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev.CheckHealth(ctx)
	for id, h := range dev.HealthReports() {
		if h.Status != devprimary.HealthHealthy || len(h.Report.Errors) != 0 {
			t.Errorf("proxy %s: primary's health check says %s %+v", id, h.Status, h.Report)
		}
	}
	if len(dev.HealthReports()) == 0 {
		t.Error("the primary has no health report of the proxy")
	}

	d2.stop(t, grace["wsedge-dialer"])
	d1.stop(t, grace["wsedge-dialer"])
	authz.stop(t, grace["wsedge-authz"])
	for _, r := range dev.Replicas() {
		if r.StoppedAt.IsZero() {
			t.Errorf("replica %s (%s) did not deregister on SIGTERM", r.ID, r.RelayAddress)
		}
	}
	for _, p := range []*proc{authz, d1, d2} {
		checkJSONLogs(t, p)
	}
}
