package deploy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/testutil"
)

// startEdgeEnvoy runs the real Envoy with a checked-in bootstrap's
// configuration moved to loopback: listener and admin on port 0, a throwaway
// certificate, upstreams where nothing listens (ext_authz fails closed). It
// returns the admin endpoint as "host/port", the form bash's /dev/tcp uses.
func startEdgeEnvoy(t *testing.T, f envoyConfigFile) string {
	t.Helper()
	cfg := f.Config
	cfg.ListenAddr = netip.MustParseAddrPort("127.0.0.1:0")
	cfg.AdminAddr = netip.MustParseAddrPort("127.0.0.1:0")
	redirect := cfg.RedirectListenAddr.IsValid()
	if redirect {
		cfg.RedirectListenAddr = netip.MustParseAddrPort("127.0.0.1:0")
	}
	dead := "127.0.0.1:" + strconv.Itoa(closedPort(t))
	cfg.AuthzAddr, cfg.DialerAddr = dead, dead
	if cfg.TLSCertFile != "" {
		cfg.TLSCertFile, cfg.TLSKeyFile = testutil.SelfSignedCert(t, "proxy.example.com")
	}
	b, err := envoy.YAML(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := testutil.StartEnvoy(t, b)
	if redirect {
		checkRedirectListener(t, e.ListenerAddr(t, envoy.RedirectListenerName))
	}
	u, err := url.Parse(e.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(u.Host, ":", "/", 1)
}

// checkRedirectListener: the shipped plain-HTTP listener answers with a
// 301 to the same URL on https.
func checkRedirectListener(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	c := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr.String())
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := c.Get("http://proxy.example.com/@alice/dev.main/apps/code/?x=1")
	if err != nil {
		t.Fatalf("redirect listener: %v", err)
	}
	_ = res.Body.Close()
	if want := "https://proxy.example.com/@alice/dev.main/apps/code/?x=1"; res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != want {
		t.Errorf("redirect listener: %d Location %q, want 301 %q", res.StatusCode, res.Header.Get("Location"), want)
	}
}

// closedPort is a loopback port nothing listens on (a moment ago).
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fakeAdmin is an HTTP server on loopback that answers every request with
// status; it returns its address as "host/port".
func fakeAdmin(t *testing.T, status int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		fmt.Fprintln(w, http.StatusText(status))
	}))
	t.Cleanup(srv.Close)
	return strings.Replace(strings.TrimPrefix(srv.URL, "http://"), ":", "/", 1)
}

// runBash runs a hook's script and returns its error and output.
func runBash(t *testing.T, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "-c", script).CombinedOutput()
	return string(out), err
}

// TestComposeEnvoyHealthcheck runs compose's Envoy healthcheck, as written,
// against the real Envoy started from the compose bootstrap: healthy once
// Envoy is LIVE, unhealthy when the admin endpoint is down or not ready.
func TestComposeEnvoyHealthcheck(t *testing.T) {
	s := readCompose(t).Services["envoy"]
	boot := checkComposeEnvoy(t, s)
	if s.Healthcheck == nil || len(s.Healthcheck.Test) != 4 || !slices.Equal(s.Healthcheck.Test[:3], []string{"CMD", "bash", "-c"}) {
		t.Fatalf("envoy healthcheck %+v is not [CMD bash -c SCRIPT]", s.Healthcheck)
	}
	// Compose turns $$ into $ before running the command.
	script := strings.ReplaceAll(s.Healthcheck.Test[3], "$$", "$")
	admin := fmt.Sprintf("/dev/tcp/127.0.0.1/%d", boot.Config.AdminAddr.Port())
	if !strings.Contains(script, admin) {
		t.Fatalf("healthcheck does not connect to the admin endpoint %s: %q", admin, script)
	}
	at := func(hostPort string) string { return strings.ReplaceAll(script, admin, "/dev/tcp/"+hostPort) }

	if out, err := runBash(t, at(startEdgeEnvoy(t, boot))); err != nil {
		t.Fatalf("healthcheck against a LIVE Envoy failed: %v\n%s", err, out)
	}
	if _, err := runBash(t, at(fmt.Sprintf("127.0.0.1/%d", closedPort(t)))); err == nil {
		t.Error("healthcheck passed with nothing listening")
	}
	if _, err := runBash(t, at(fakeAdmin(t, http.StatusServiceUnavailable))); err == nil {
		t.Error("healthcheck passed on 503 (Envoy not LIVE yet)")
	}
}

var sleepCmd = regexp.MustCompile(`\bsleep (\d+)\b`)

// TestKubernetesEnvoyPreStop runs the Envoy Deployment's preStop hook, as
// written (minus its wait), against the real Envoy started from the base
// bootstrap: the graceful drain request is accepted, and a refused or
// impossible drain fails the hook.
func TestKubernetesEnvoyPreStop(t *testing.T) {
	o := index(t, baseFromFiles(t).Objs)
	d := o.deployments["wsedge-envoy"]
	c := d.Spec.Template.Spec.Containers[0]
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatal("wsedge-envoy has no exec preStop hook")
	}
	cmd := c.Lifecycle.PreStop.Exec.Command
	if len(cmd) != 3 || cmd[0] != "bash" || cmd[1] != "-c" {
		t.Fatalf("preStop %q is not [bash -c SCRIPT]", cmd)
	}
	boot, _ := envoyBootstrap(t, o, d)
	script := cmd[2]
	admin := fmt.Sprintf("/dev/tcp/127.0.0.1/%d", boot.Config.AdminAddr.Port())
	if !strings.Contains(script, admin) || !strings.Contains(script, "POST /drain_listeners?graceful") {
		t.Fatalf("preStop does not ask the admin endpoint %s for a graceful drain: %q", admin, script)
	}
	m := sleepCmd.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("preStop does not wait: %q", script)
	}
	if wait, _ := strconv.Atoi(m[1]); d.Spec.Template.Spec.TerminationGracePeriodSeconds == nil || int64(wait) >= *d.Spec.Template.Spec.TerminationGracePeriodSeconds {
		t.Errorf("preStop waits %ss, not less than terminationGracePeriodSeconds", m[1])
	}
	at := func(hostPort string) string {
		s := strings.ReplaceAll(script, admin, "/dev/tcp/"+hostPort)
		return sleepCmd.ReplaceAllString(s, "sleep 0")
	}

	if out, err := runBash(t, at(startEdgeEnvoy(t, boot))); err != nil {
		t.Fatalf("preStop against a real Envoy failed: %v\n%s", err, out)
	}
	if _, err := runBash(t, at(fakeAdmin(t, http.StatusNotFound))); err == nil {
		t.Error("preStop succeeded although the drain was refused (404)")
	}
	if _, err := runBash(t, at(fmt.Sprintf("127.0.0.1/%d", closedPort(t)))); err == nil {
		t.Error("preStop succeeded with nothing listening")
	}
}
