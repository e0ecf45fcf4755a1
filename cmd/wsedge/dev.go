package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	devprimary "github.com/wsedge/wsedge/dev/primary"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/internal/envoyrun"
	"github.com/wsedge/wsedge/tokens"
)

// devCmd is `wsedge dev`.
type devCmd struct {
	logs                        logFlags
	catalog, domain             string
	port, primaryPort           int
	tls                         bool
	envoyBin, dir               string
	authzMetrics, dialerMetrics string
	fastPath                    bool
	otlpEndpoint                string
	accessLog                   string
}

func (f *devCmd) flags(fs *flag.FlagSet) {
	fs.StringVar(&f.catalog, "catalog", "", "YAML catalog of users, workspaces, agents and apps for the dev primary (default: the built-in demo)")
	fs.StringVar(&f.domain, "domain", "localhost", "domain under which the demo hostnames live; *.localhost resolves to loopback in browsers and curl without /etc/hosts")
	fs.IntVar(&f.port, "port", 8080, "port of the edge (Envoy): access URL and subdomain apps")
	fs.IntVar(&f.primaryPort, "primary-port", 3000, "port of the dev primary (the dashboard where you log in)")
	fs.BoolVar(&f.tls, "tls", false, "terminate TLS at the edge with a self-signed certificate generated on the spot")
	fs.StringVar(&f.envoyBin, "envoy-bin", "", "Envoy `binary` to run (default: .tools/bin/envoy of this repository, then envoy on PATH)")
	fs.StringVar(&f.dir, "dir", "", "directory for logs and generated files (default: a new temporary directory)")
	fs.StringVar(&f.authzMetrics, "authz-metrics-listen", "127.0.0.1:9101", "authz Prometheus /metrics address (empty disables)")
	fs.StringVar(&f.dialerMetrics, "dialer-metrics-listen", "127.0.0.1:9102", "dialer Prometheus /metrics address (empty disables)")
	fs.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "host:port of an OTLP/gRPC collector (plain gRPC, e.g. 127.0.0.1:4317) that Envoy, authz and the dialer send every request's trace to (empty: no tracing)")
	fs.BoolVar(&f.fastPath, "fast-path", true, "let Envoy verify signed app token cookies and skip ext_authz for them (envoy-config --fast-path)")
	// A dev stack is for watching requests go by: every one gets a line,
	// where envoy-config's default logs errors only.
	fs.StringVar(&f.accessLog, "access-log", envoy.AccessLogAll, "which requests Envoy's access log (stdout.log) records: all, errors or off (envoy-config --access-log)")
	f.logs.register(fs)
}

func (f *devCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	switch f.accessLog {
	case envoy.AccessLogAll, envoy.AccessLogErrors, envoy.AccessLogOff:
	default:
		return fmt.Errorf("--access-log %q: want all, errors or off", f.accessLog)
	}
	cat := devprimary.DemoCatalog()
	if f.catalog != "" {
		c, err := devprimary.LoadCatalog(f.catalog)
		if err != nil {
			return err
		}
		cat = c
	}
	bin := f.envoyBin
	if bin == "" {
		exe, _ := os.Executable()
		wd, _ := os.Getwd()
		b, err := envoyrun.FindBinary(wd, filepath.Dir(exe))
		if err != nil {
			return err
		}
		bin = b
	}
	for _, p := range []struct {
		name string
		port int
	}{{"--port", f.port}, {"--primary-port", f.primaryPort}} {
		if err := portFree(p.port); err != nil {
			return fmt.Errorf("%s %d: %w (pick another with %s)", p.name, p.port, err, p.name)
		}
	}
	dir := f.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "wsedge-dev-")
		if err != nil {
			return err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "wsedge.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log, err := f.logs.logger(logFile)
	if err != nil {
		return err
	}
	// tailscale's packages also write with the standard logger; keep the
	// terminal for the summary.
	stdlog.SetOutput(logFile)

	scheme := "http"
	var certFile, keyFile string
	domain := strings.TrimPrefix(f.domain, ".")
	if f.tls {
		scheme = "https"
		certFile, keyFile, err = devstack.WriteSelfSignedCert(dir, "proxy."+domain, "*.apps."+domain, "127.0.0.1")
		if err != nil {
			return err
		}
	}
	hostPort := func(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	cfg := devstack.DevConfig{
		Catalog:          cat,
		DashboardURL:     &url.URL{Scheme: "http", Host: hostPort(domain, f.primaryPort)},
		AccessURL:        &url.URL{Scheme: scheme, Host: hostPort("proxy."+domain, f.port)},
		WildcardHostname: "*.apps." + domain + ":" + strconv.Itoa(f.port),
		PrimaryListen:    netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(f.primaryPort)),
		EdgeListen:       netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(f.port)),
		TLSCertFile:      certFile,
		TLSKeyFile:       keyFile,
		EnvoyBinary:      bin,
		Dir:              dir,
		Logger:           log,
		Progress:         func(step string) { fmt.Fprintf(stderr, "wsedge dev: starting %s…\n", step) },
		NoFastPath:       !f.fastPath,
		OTLPEndpoint:     f.otlpEndpoint,
		Envoy:            func(c *envoy.Config) { c.AccessLog = f.accessLog },
	}
	authzReg, dialerReg := newRegistry(), newRegistry()
	cfg.AuthzRegisterer, cfg.DialerRegisterer = authzReg, dialerReg
	var stopA, stopD func()
	f.authzMetrics, stopA, err = serveMetrics(f.authzMetrics, authzReg, log)
	if err != nil {
		return fmt.Errorf("--authz-metrics-listen: %w", err)
	}
	defer stopA()
	f.dialerMetrics, stopD, err = serveMetrics(f.dialerMetrics, dialerReg, log)
	if err != nil {
		return fmt.Errorf("--dialer-metrics-listen: %w", err)
	}
	defer stopD()

	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	dev, err := devstack.StartDev(startCtx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("%w\n(logs in %s)", err, dir)
	}
	printDevSummary(stdout, cfg, dev, f, dir)
	select {
	case <-ctx.Done():
	case <-dev.Envoy.Exited():
		log.Error("Envoy exited", "error", dev.Envoy.Err())
	}
	fmt.Fprintln(stderr, "wsedge dev: stopping…")
	err = dev.Close()
	if err == nil {
		fmt.Fprintln(stderr, "wsedge dev: stopped.")
	}
	return err
}

// portFree reports whether a loopback TCP port can be listened on.
func portFree(port int) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("not a port")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return errors.New("port in use")
		}
		return err
	}
	return ln.Close()
}

func printDevSummary(w io.Writer, cfg devstack.DevConfig, dev *devstack.Dev, f *devCmd, dir string) {
	owner, ws, agent, app, agentID := demoTargets(cfg.Catalog)
	session, _ := dev.Primary.SessionToken(owner)
	base := cfg.AccessURL.String()
	wildHost := func(sub string) string {
		u := *cfg.AccessURL
		u.Host = strings.Replace(strings.TrimSuffix(cfg.WildcardHostname, ":"+cfg.AccessURL.Port()), "*", sub, 1) + ":" + cfg.AccessURL.Port()
		return u.String() + "/"
	}
	sub := fmt.Sprintf("%s--%s--%s--%s", app, agent, ws, owner)
	fmt.Fprintf(w, "\nwsedge dev is up: real Envoy, authz, dialer and a dev agent over a real WireGuard tailnet.\n\n")
	fmt.Fprintf(w, "  Dashboard login  %s/login   (user %s, password %s)\n", cfg.DashboardURL, owner, passwordOf(cfg.Catalog, owner))
	fmt.Fprintf(w, "  Path app         %s/@%s/%s.%s/apps/%s/\n", base, owner, ws, agent, app)
	fmt.Fprintf(w, "  Subdomain app    %s\n", wildHost(sub))
	if agentID != "" {
		// The browser terminal first; then its websocket and the token
		// request, for scripts.
		ptyURL := strings.Replace(base, "http", "ws", 1) + "/api/v2/workspaceagents/" + agentID + "/pty"
		fmt.Fprintf(w, "  Terminal         %s   (xterm.js in the browser, after the dashboard login)\n", dev.Primary.TerminalURL(owner, ws, agent))
		fmt.Fprintf(w, "                   websocket: %s?reconnect=<uuid>&width=80&height=24&%s=<token>\n", ptyURL, tokens.SignedAppTokenQueryParam)
		fmt.Fprintf(w, "                   token: curl -s -H 'Coder-Session-Token: %s' -d '{\"url\":\"%s\",\"agentID\":\"%s\"}' %s/api/v2/applications/reconnecting-pty-signed-token\n",
			session, ptyURL, agentID, cfg.DashboardURL)
	}
	metricsURL := func(addr string) string {
		if addr == "" {
			return "(off)"
		}
		return "http://" + addr + "/metrics"
	}
	fmt.Fprintf(w, "  Metrics          authz %s  dialer %s  Envoy %s/stats/prometheus\n", metricsURL(f.authzMetrics), metricsURL(f.dialerMetrics), dev.Envoy.AdminURL)
	fmt.Fprintf(w, "  Logs             %s (wsedge.log, envoy.log, stdout.log = Envoy access log)\n\n", dir)
	insecure := ""
	if f.tls {
		insecure = "-k "
	}
	fmt.Fprintf(w, "Try it from a shell (curl resolves *.localhost to loopback by itself):\n")
	fmt.Fprintf(w, "  curl %s-H 'Coder-Session-Token: %s' %s/@%s/%s.%s/apps/%s/\n", insecure, session, base, owner, ws, agent, app)
	fmt.Fprintf(w, "  curl %s-sI %s   # anonymous: 303 to the dashboard's auth-redirect\n", insecure, wildHost(sub))
	if f.domain != "localhost" {
		fmt.Fprintf(w, "  (with --domain %s, add --resolve for each host, e.g. --resolve '*:%d:127.0.0.1')\n", f.domain, f.port)
	}
	fmt.Fprintf(w, "\nPress Ctrl-C to stop.\n")
}

// demoTargets picks the first app of the first connected agent.
func demoTargets(c *devprimary.Catalog) (owner, ws, agent, app, agentID string) {
	for _, w := range c.Workspaces {
		for _, a := range w.Agents {
			if a.Connected && len(a.Apps) > 0 {
				return w.Owner, w.Name, a.Name, a.Apps[0].Slug, a.ID
			}
		}
	}
	return "", "", "", "", ""
}

func passwordOf(c *devprimary.Catalog, user string) string {
	for _, u := range c.Users {
		if u.Username == user || u.ID == user {
			return u.Password
		}
	}
	return "(none)"
}
