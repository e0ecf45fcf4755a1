package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/internal/testutil"
	"github.com/wsedge/wsedge/tokens"
)

// chromiumEnv names the environment variable that overrides the Chromium
// binary of the browser test.
const chromiumEnv = "WSEDGE_CHROMIUM"

// artifactsEnv names the directory that receives the browser test's
// screenshots and logs (default: <repo>/e2e/artifacts, git-ignored).
const artifactsEnv = "WSEDGE_ARTIFACTS"

// minChromiumMajor is the oldest Chromium the test accepts: the "new"
// headless mode (the only one since 132) and CDP over --remote-debugging-pipe
// as chromedp v0.23 drives it. Debian replaces its chromium package with
// every security release, so the exact version cannot be pinned; the test
// logs the one it drove.
const minChromiumMajor = 120

// TestBrowser is issue 9's real-browser test: Debian's headless Chromium
// against `wsedge dev` (bin/wsedge, as `make run` starts it). It opens the
// subdomain app, lands on the dashboard login, signs in as the demo user,
// ends on the app's page after the login hand-off, then opens the path app,
// which needs no second login, and the dashboard's web terminal (a command
// typed and its output read from the page, the same shell after a reload);
// it checks page content, final URLs and the cookies the browser stored,
// saves a screenshot of each step, and stops wsedge dev with Ctrl-C's
// SIGINT.
func TestBrowser(t *testing.T) {
	chrome := chromiumBinary(t)
	art := artifactsDir(t)
	t.Logf("screenshots and logs of this test go to %s", art)

	dev := startWsedgeDev(t, art)
	appHost := fmt.Sprintf("code--main--dev--alice.apps.localhost:%d", dev.port)
	accessHost := fmt.Sprintf("proxy.localhost:%d", dev.port)
	dashboard := fmt.Sprintf("localhost:%d", dev.primaryPort)
	// The summary is what a newcomer copies into the browser: check it
	// names the demo's URLs on the ports given.
	if want := "http://" + dashboard + "/login"; dev.loginURL != want {
		t.Errorf("summary login URL = %q, want %q", dev.loginURL, want)
	}
	if want := "http://" + appHost + "/"; dev.subdomainURL != want {
		t.Errorf("summary subdomain app URL = %q, want %q", dev.subdomainURL, want)
	}
	if want := "http://" + accessHost + "/@alice/dev.main/apps/code/"; dev.pathURL != want {
		t.Errorf("summary path app URL = %q, want %q", dev.pathURL, want)
	}
	if want := "http://" + dashboard + "/@alice/dev.main/terminal"; dev.terminalURL != want {
		t.Errorf("summary terminal URL = %q, want %q", dev.terminalURL, want)
	}
	if t.Failed() {
		t.FailNow()
	}

	ctx := startChromium(t, chrome, art, dev.port, dev.primaryPort)
	navs := recordNavigations(t, ctx)
	pageErrs := recordPageErrors(t, ctx)
	appPath := "/@alice/dev.main/apps/code/"
	authRedirect := dashboard + "/api/v2/applications/auth-redirect"
	shot := func(name string) {
		t.Helper()
		png, err := runIn(ctx, 10*time.Second, chromedp.CaptureScreenshot())
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		if err := os.WriteFile(filepath.Join(art, name), png, 0o644); err != nil {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}

	// 1. Anonymous: the subdomain app sends the browser through the
	// dashboard's auth-redirect to its login page.
	if _, err := runIn(ctx, 30*time.Second, chromedp.Steps(
		chromedp.Navigate(dev.subdomainURL),
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
	)); err != nil {
		shot("01-login-failed.png")
		t.Fatalf("open %s: no login form: %v", dev.subdomainURL, err)
	}
	shot("01-login.png")
	loc := location(t, ctx)
	if loc.Host != dashboard || loc.Path != "/login" {
		t.Fatalf("anonymous %s ended on %s, want the dashboard login http://%s/login", dev.subdomainURL, loc, dashboard)
	}
	if r := loc.Query().Get("redirect"); !strings.Contains(r, "/api/v2/applications/auth-redirect") {
		t.Errorf("login page's redirect = %q, want the dashboard's auth-redirect (which hands the session to the app)", r)
	}
	checkHops(t, "anonymous subdomain app", navs.take(loc.String()), []string{
		"GET " + appHost + "/ → 303",
		"GET " + authRedirect + " → 303",
		"GET " + dashboard + "/login",
	})

	// 2. Sign in with the credentials the summary printed; the hand-off
	// ends on the app itself.
	if _, err := runIn(ctx, 30*time.Second, signInToApp(dev)); err != nil {
		shot("02-subdomain-app-failed.png")
		t.Fatalf("sign in as %s: the app's page never came: %v (now at %s)", dev.user, err, location(t, ctx))
	}
	shot("02-subdomain-app.png")
	if loc := location(t, ctx); loc.String() != dev.subdomainURL {
		t.Errorf("after login the browser is at %s, want exactly %s (no smuggled key left in the URL)", loc, dev.subdomainURL)
	}
	checkHops(t, "sign in", navs.take(dev.subdomainURL), []string{
		"POST " + dashboard + "/login → 303",
		"GET " + authRedirect + " → 303",
		"GET " + appHost + "/ +key → 303",
		"GET " + appHost + "/",
	})
	page := demoPage(t, ctx)
	if page.title != devagent.DemoAppTitle || page.heading != devagent.DemoAppTitle {
		t.Errorf("subdomain app page: title %q, heading %q, want %q", page.title, page.heading, devagent.DemoAppTitle)
	}
	if page.host != appHost || page.path != "/" || page.method != "GET" {
		t.Errorf("the app saw %s %s on host %q, want GET / on %q", page.method, page.path, page.host, appHost)
	}
	if strings.Contains(page.cookieNames, "coder_") {
		t.Errorf("the app saw Coder's cookies %q; the proxy must strip them", page.cookieNames)
	}

	checkSameOriginWarm(t, ctx, dev, appHost)

	subCookie := tokens.SubdomainAppSessionCookie(fmt.Sprintf("*.apps.localhost:%d", dev.port))
	jar := cookiesFor(t, ctx, dev.subdomainURL, dev.loginURL)
	if c := jar[subCookie]; c == nil {
		t.Errorf("no %s cookie for the subdomain app; the browser has %s", subCookie, names(jar))
	} else if c.Domain != ".apps.localhost" || c.Path != "/" || !c.HTTPOnly {
		t.Errorf("%s: domain %q path %q HttpOnly %v, want .apps.localhost / HttpOnly", subCookie, c.Domain, c.Path, c.HTTPOnly)
	}
	if c := jar[tokens.SignedAppTokenCookie]; c == nil {
		t.Errorf("no %s cookie for the subdomain app; the browser has %s", tokens.SignedAppTokenCookie, names(jar))
	} else if c.Domain != strings.Split(appHost, ":")[0] || c.Path != "/" || !c.HTTPOnly {
		t.Errorf("%s: domain %q path %q HttpOnly %v, want host-only on the app host, / and HttpOnly", tokens.SignedAppTokenCookie, c.Domain, c.Path, c.HTTPOnly)
	}
	if c := jar[tokens.SessionTokenCookie]; c == nil {
		t.Errorf("no dashboard %s cookie after signing in; the browser has %s", tokens.SessionTokenCookie, names(jar))
	} else if c.Domain != "localhost" || !c.HTTPOnly {
		t.Errorf("%s: domain %q HttpOnly %v, want host-only on localhost and HttpOnly", tokens.SessionTokenCookie, c.Domain, c.HTTPOnly)
	}

	// 3. The path app: no cookie on the access URL yet, so a hand-off
	// again, but the dashboard session makes it a redirect chain with no
	// login page.
	if _, err := runIn(ctx, 30*time.Second, chromedp.Steps(
		chromedp.Navigate(dev.pathURL),
		chromedp.WaitVisible(chromedp.ID("host")),
	)); err != nil {
		shot("03-path-app-failed.png")
		t.Fatalf("open %s: the app's page never came: %v (now at %s)", dev.pathURL, err, location(t, ctx))
	}
	shot("03-path-app.png")
	if loc := location(t, ctx); loc.String() != dev.pathURL {
		t.Errorf("the path app ended at %s, want exactly %s", loc, dev.pathURL)
	}
	// coderd's hand-off joins the app path "/" onto the base path, which
	// drops the trailing slash: the key comes back to .../apps/code, and
	// the slash is added by a 307 after the key is taken (as coderd does).
	noSlash := strings.TrimSuffix(appPath, "/")
	checkHops(t, "path app", navs.take(dev.pathURL), []string{
		"GET " + accessHost + appPath + " → 303",
		"GET " + authRedirect + " → 303",
		"GET " + accessHost + noSlash + " +key → 303",
		"GET " + accessHost + noSlash + " → 307",
		"GET " + accessHost + appPath,
	})
	page = demoPage(t, ctx)
	if page.title != devagent.DemoAppTitle || page.heading != devagent.DemoAppTitle {
		t.Errorf("path app page: title %q, heading %q, want %q", page.title, page.heading, devagent.DemoAppTitle)
	}
	// The proxy strips the /@owner/ws.agent/apps/slug prefix.
	if page.host != accessHost || page.path != "/" || page.method != "GET" {
		t.Errorf("the path app saw %s %s on host %q, want GET / on %q", page.method, page.path, page.host, accessHost)
	}
	if strings.Contains(page.cookieNames, "coder_") {
		t.Errorf("the path app saw Coder's cookies %q; the proxy must strip them", page.cookieNames)
	}
	jar = cookiesFor(t, ctx, dev.pathURL)
	if c := jar[tokens.PathAppSessionCookie]; c == nil {
		t.Errorf("no %s cookie for the path app; the browser has %s", tokens.PathAppSessionCookie, names(jar))
	} else if c.Domain != "proxy.localhost" || c.Path != "/" || !c.HTTPOnly {
		t.Errorf("%s: domain %q path %q HttpOnly %v, want host-only on proxy.localhost, / and HttpOnly", tokens.PathAppSessionCookie, c.Domain, c.Path, c.HTTPOnly)
	}
	if c := jar[tokens.SignedAppTokenCookie]; c == nil {
		t.Errorf("no %s cookie for the path app; the browser has %s", tokens.SignedAppTokenCookie, names(jar))
	} else if c.Domain != "proxy.localhost" || c.Path != appPath || !c.HTTPOnly {
		t.Errorf("%s: domain %q path %q HttpOnly %v, want host-only on proxy.localhost, the app's base path and HttpOnly", tokens.SignedAppTokenCookie, c.Domain, c.Path, c.HTTPOnly)
	}
	if _, ok := jar[subCookie]; ok {
		t.Errorf("the subdomain session cookie %s is sent to the access URL too", subCookie)
	}
	writeCookieList(t, ctx, filepath.Join(art, "cookies.json"), dev.subdomainURL, dev.pathURL, dev.loginURL)

	// 4. The web terminal, signed in already: a command's output read
	// from the page, the same shell after a reload, a new one without
	// the reconnect id.
	browserTerminal(t, ctx, dev.terminalURL, accessHost, shot)
	if errs := pageErrs.take(); len(errs) > 0 {
		t.Errorf("the pages logged errors (a CSP violation, a script error):\n  %s", strings.Join(errs, "\n  "))
	}

	// 5. The metrics endpoints the summary printed, with the requests
	// above counted.
	for _, m := range []struct{ name, metric string }{
		{"authz", "wsedge_authz_checks_total"},
		{"dialer", "wsedge_dialer_requests_total"},
		{"Envoy", "envoy_http_downstream_rq_total"},
	} {
		u := dev.metricsURLs[m.name]
		if _, err := runIn(ctx, 15*time.Second, chromedp.Navigate(u)); err != nil {
			t.Errorf("open %s metrics %s: %v", m.name, u, err)
			continue
		}
		text, err := runIn(ctx, 5*time.Second, chromedp.TextContent(chromedp.CSS("body")))
		if err != nil {
			t.Errorf("%s metrics %s: %v", m.name, u, err)
			continue
		}
		if !strings.Contains(text, m.metric) {
			t.Errorf("%s metrics %s: no %s in\n%.500s", m.name, u, m.metric, text)
		}
	}
	shot("07-envoy-metrics.png")

	// 6. Ctrl-C, with the browser still connected.
	dev.interrupt(t)
}

// navLog records the top-level document requests of the tab, redirects
// included, as the browser made them.
type navLog struct {
	mu   sync.Mutex
	hops []navHop
}

type navHop struct {
	method string
	url    *url.URL
	status int64 // of a redirect, 0 for the last hop
}

// recordNavigations subscribes to the tab's requests until the test ends.
func recordNavigations(t *testing.T, ctx context.Context) *navLog {
	t.Helper()
	lctx, cancel := context.WithCancel(ctx)
	events := chromedp.Events(lctx, network.RequestWillBeSent)
	n := &navLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range events {
			if err != nil {
				return
			}
			if ev.Type != network.ResourceTypeDocument || ev.Request == nil {
				continue
			}
			u, err := url.Parse(ev.Request.URL)
			if err != nil {
				continue
			}
			n.mu.Lock()
			if k := len(n.hops); ev.RedirectResponse != nil && k > 0 {
				n.hops[k-1].status = ev.RedirectResponse.Status
			}
			n.hops = append(n.hops, navHop{method: ev.Request.Method, url: u})
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return n
}

// take returns the hops recorded since the last take, once the last one is
// final (the events arrive a moment after the page), each as
// "METHOD host/path", with " +key" when it carries the smuggled
// application_connect key and " → status" when it was redirected.
func (n *navLog) take(final string) []string {
	deadline := time.Now().Add(3 * time.Second)
	for {
		n.mu.Lock()
		last := ""
		if k := len(n.hops); k > 0 {
			last = n.hops[k-1].url.String()
		}
		if last == final || time.Now().After(deadline) {
			var out []string
			for _, h := range n.hops {
				hop := h.method + " " + h.url.Host + h.url.Path
				if h.url.Query().Has(tokens.SmuggledAPIKeyQueryParam) {
					hop += " +key"
				}
				if h.status != 0 {
					hop += fmt.Sprintf(" → %d", h.status)
				}
				out = append(out, hop)
			}
			n.hops = nil
			n.mu.Unlock()
			return out
		}
		n.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

func checkHops(t *testing.T, step string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: the browser went through\n  %s\nwant\n  %s", step, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// signInToApp fills the dashboard's login form with the credentials the
// summary printed and waits for the demo app's page the hand-off ends on.
func signInToApp(dev *wsedgeDev) chromedp.Action[struct{}] {
	return chromedp.Steps(
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), dev.user),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), dev.password),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("host")),
	)
}

// runIn runs one action with a timeout; the browser lives on after it.
func runIn[T any](ctx context.Context, d time.Duration, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return chromedp.Run(ctx, a)
}

func location(t *testing.T, ctx context.Context) *url.URL {
	t.Helper()
	s, err := runIn(ctx, 5*time.Second, chromedp.Location())
	if err != nil {
		t.Fatalf("browser location: %v", err)
	}
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("browser location %q: %v", s, err)
	}
	return u
}

// shownRequest is what the demo app's page shows of the request it got.
type shownRequest struct {
	title, heading, method, path, host, cookieNames string
}

func demoPage(t *testing.T, ctx context.Context) shownRequest {
	t.Helper()
	var r shownRequest
	var err error
	if r.title, err = runIn(ctx, 5*time.Second, chromedp.Title()); err != nil {
		t.Fatalf("page title: %v", err)
	}
	for _, f := range []struct {
		sel chromedp.CSS
		dst *string
	}{{"h1", &r.heading}, {"#method", &r.method}, {"#path", &r.path}, {"#host", &r.host}, {"#cookie-names", &r.cookieNames}} {
		// TextContent: an empty cell is "" (Text waits for visible text).
		if *f.dst, err = runIn(ctx, 5*time.Second, chromedp.TextContent(f.sel)); err != nil {
			t.Fatalf("page %s: %v", f.sel, err)
		}
		*f.dst = strings.TrimSpace(*f.dst)
	}
	return r
}

// cookiesFor is the browser's cookies that it would send to the URLs, by
// name.
func cookiesFor(t *testing.T, ctx context.Context, urls ...string) map[string]*network.Cookie {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := chromedp.Call(cctx, network.GetCookies, network.GetCookiesParams{URLs: urls})
	if err != nil {
		t.Fatalf("browser cookies: %v", err)
	}
	out := map[string]*network.Cookie{}
	for _, c := range res.Cookies {
		out[c.Name] = c
	}
	return out
}

func names(jar map[string]*network.Cookie) string {
	var n []string
	for k, c := range jar {
		n = append(n, k+"@"+c.Domain+c.Path)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// writeCookieList saves the cookies (without their values, which are
// credentials) as an artifact.
func writeCookieList(t *testing.T, ctx context.Context, file string, urls ...string) {
	t.Helper()
	type entry struct {
		Name, Domain, Path, SameSite string
		HTTPOnly, Secure, Session    bool
	}
	var list []entry
	for _, c := range cookiesFor(t, ctx, urls...) {
		list = append(list, entry{c.Name, c.Domain, c.Path, string(c.SameSite), c.HTTPOnly, c.Secure, c.Session})
	}
	b, _ := json.MarshalIndent(list, "", "  ")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Errorf("cookie list: %v", err)
	}
}

// chromiumBinary finds Chromium: $WSEDGE_CHROMIUM, Debian's real binary
// behind its /usr/bin/chromium launcher script (the script adds extension
// and GPU flags of its own), or chromium on PATH. A missing browser fails
// the test with the command that installs it; it never skips.
func chromiumBinary(t *testing.T) string {
	t.Helper()
	var bin string
	if p := os.Getenv(chromiumEnv); p != "" {
		bin = p
	} else if fi, err := os.Stat("/usr/lib/chromium/chromium"); err == nil && fi.Mode()&0o111 != 0 {
		bin = "/usr/lib/chromium/chromium"
	} else if p, err := exec.LookPath("chromium"); err == nil {
		bin = p
	} else {
		t.Fatalf("e2e: no Chromium for the browser test: run `make browser` (installs Debian's chromium package with apt-get, as root or with sudo) or set %s to a Chromium binary", chromiumEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		t.Fatalf("e2e: %s --version: %v (run `make browser`, or set %s to a working Chromium)", bin, err, chromiumEnv)
	}
	version := strings.TrimSpace(string(out))
	m := regexp.MustCompile(`\b(\d+)\.\d+\.\d+\.\d+\b`).FindStringSubmatch(version)
	if m == nil {
		t.Fatalf("e2e: %s --version printed %q, not a Chromium version", bin, version)
	}
	if major, _ := strconv.Atoi(m[1]); major < minChromiumMajor {
		t.Fatalf("e2e: %s is %s; the browser test needs Chromium %d or later (run `make browser`)", bin, version, minChromiumMajor)
	}
	pkg := ""
	if b, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", "chromium").Output(); err == nil && len(b) > 0 {
		pkg = " (Debian package chromium " + string(b) + ")"
	}
	t.Logf("browser: %s — %s%s", bin, version, pkg)
	return bin
}

// artifactsDir is a fresh directory for this test's screenshots and logs:
// $WSEDGE_ARTIFACTS/TestBrowser, else <repo>/e2e/artifacts/TestBrowser.
func artifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv(artifactsEnv)
	if root == "" {
		root = filepath.Join(testutil.RepoRoot(t), "e2e", "artifacts")
	}
	dir, err := filepath.Abs(filepath.Join(root, t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	return dir
}

// startChromium starts headless Chromium with a fresh profile and returns
// its tab's context; the browser is killed when the test ends. Every host
// name resolves to loopback or to nothing, so the browser never reaches
// another address.
func startChromium(t *testing.T, bin, art string, ports ...int) context.Context {
	t.Helper()
	return startChromiumWith(t, bin, art, nil, ports...)
}

// startChromiumWith is startChromium with more command-line options.
func startChromiumWith(t *testing.T, bin, art string, more []chromedp.ExecAllocatorOption, ports ...int) context.Context {
	t.Helper()
	profile, err := os.MkdirTemp("", "wsedge-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(art, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	var allowed []string
	for _, p := range ports {
		allowed = append(allowed, strconv.Itoa(p))
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1024, 640),
		chromedp.CombinedOutput(logFile),
		// *.localhost is loopback in Chromium anyway; the rules make it
		// explicit and send every other name nowhere (no DNS, no Google
		// services).
		chromedp.Flag("host-resolver-rules", "MAP localhost 127.0.0.1, MAP *.localhost 127.0.0.1, EXCLUDE 127.0.0.1, MAP * ~NOTFOUND"),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		// A free port can be one of Chromium's restricted ports.
		chromedp.Flag("explicitly-allowed-ports", strings.Join(allowed, ",")),
	)
	opts = append(opts, more...)
	if os.Geteuid() == 0 {
		// Chromium refuses to start its sandbox as root.
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // kills the browser and waits for it
		logFile.Close()
		// Chromium's helpers may still be writing into the profile for a
		// moment after the browser is gone.
		for i := 0; i < 20; i++ {
			if err = os.RemoveAll(profile); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("browser profile %s left behind: %v", profile, err)
	})
	// Start the browser now. The browser lives as long as the context of
	// the first call, so that call gets no timeout of its own: a timer
	// kills the browser instead if it does not come up.
	start := time.Now()
	timer := time.AfterFunc(30*time.Second, cancelAlloc)
	err = chromedp.Do(ctx)
	if !timer.Stop() {
		t.Fatalf("start Chromium %s: not up within 30s: %v (its output is in %s)", bin, err, logFile.Name())
	}
	if err != nil {
		t.Fatalf("start Chromium %s: %v (its output is in %s)", bin, err, logFile.Name())
	}
	t.Logf("browser started in %v", time.Since(start).Round(time.Millisecond))
	return ctx
}

// wsedgeDev is a running `bin/wsedge dev` and what its summary printed.
type wsedgeDev struct {
	cmd                             *exec.Cmd
	port, primaryPort               int
	dir                             string
	loginURL, pathURL, subdomainURL string
	terminalURL                     string
	metricsURLs                     map[string]string // authz, dialer, Envoy
	user, password                  string
	stdout, stderr                  *syncBuffer
	exited                          chan struct{} // closed once Wait returned
	waitErr                         error
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// wsedgeBinary is bin/wsedge, which `make test` builds first.
func wsedgeBinary(t *testing.T) string {
	t.Helper()
	root := testutil.RepoRoot(t)
	bin := filepath.Join(root, "bin", "wsedge")
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatalf("e2e: no %s: run `make build` (`make test` builds it first): %v", bin, err)
	}
	// A binary older than the code it is built from tests old code; say so.
	var newer []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin") && p != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			if info, err := d.Info(); err == nil && info.ModTime().After(fi.ModTime()) {
				newer = append(newer, strings.TrimPrefix(p, root+"/"))
			}
		}
		return nil
	})
	if len(newer) > 0 {
		t.Logf("warning: %s is older than %d source files (e.g. %s); run `make build` to test the current code", bin, len(newer), newer[0])
	}
	return bin
}

var summaryCreds = regexp.MustCompile(`\(user (\S+), password (\S+)\)`)

// startWsedgeDev starts bin/wsedge dev on free ports, with flags added to
// its command line, in its own process group and waits for its summary.
func startWsedgeDev(t *testing.T, art string, flags ...string) *wsedgeDev {
	t.Helper()
	bin := wsedgeBinary(t)
	envoy := testutil.EnvoyBinary(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		d, err := tryStartWsedgeDev(t, bin, envoy, art, flags)
		if err == nil {
			return d
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatal(lastErr)
	return nil
}

var errPortTaken = errors.New("a port was taken meanwhile")

func tryStartWsedgeDev(t *testing.T, bin, envoy, art string, flags []string) (*wsedgeDev, error) {
	d := &wsedgeDev{
		port:        testutil.FreePort(t),
		primaryPort: testutil.FreePort(t),
		dir:         t.TempDir(),
		stdout:      &syncBuffer{},
		stderr:      &syncBuffer{},
		exited:      make(chan struct{}),
	}
	// Fixed free ports for metrics too, so that the summary prints URLs
	// that work.
	d.cmd = exec.Command(bin, append([]string{"dev",
		"--port", strconv.Itoa(d.port), "--primary-port", strconv.Itoa(d.primaryPort),
		"--dir", d.dir, "--envoy-bin", envoy,
		"--authz-metrics-listen", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		"--dialer-metrics-listen", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}, flags...)...)
	// Its own process group, as a shell gives a foreground job: Ctrl-C
	// reaches the whole group, and cleanup can kill all of it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.cmd.Stderr = d.stderr
	pipe, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s dev: %w", bin, err)
	}
	ready := make(chan struct{})
	go func() {
		// Reads stdout until wsedge dev exits, then reaps it.
		sc := bufio.NewScanner(pipe)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(d.stdout, line)
			if !signalled && strings.HasPrefix(line, "Press Ctrl-C") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
		for _, f := range []string{"wsedge.log", "envoy.log", "stdout.log"} {
			if b, err := os.ReadFile(filepath.Join(d.dir, f)); err == nil {
				_ = os.WriteFile(filepath.Join(art, "wsedge-dev-"+f), b, 0o644)
			}
		}
		_ = os.WriteFile(filepath.Join(art, "wsedge-dev-stdout.txt"), []byte(d.stdout.String()), 0o644)
		_ = os.WriteFile(filepath.Join(art, "wsedge-dev-stderr.txt"), []byte(d.stderr.String()), 0o644)
	})
	select {
	case <-ready:
	case <-d.exited:
		if strings.Contains(d.stderr.String(), "port in use") {
			return nil, fmt.Errorf("%w: %s", errPortTaken, d.stderr.String())
		}
		return nil, fmt.Errorf("wsedge dev exited before its summary (%v); stderr:\n%s\nlogs in %s", d.waitErr, d.stderr.String(), art)
	case <-time.After(90 * time.Second):
		return nil, fmt.Errorf("wsedge dev printed no summary within 90s; stderr:\n%s\nlogs in %s", d.stderr.String(), art)
	}
	t.Logf("wsedge dev up in %v (edge :%d, dashboard :%d)", time.Since(start).Round(time.Millisecond), d.port, d.primaryPort)
	for _, line := range strings.Split(d.stdout.String(), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "Dashboard" && f[1] == "login":
			d.loginURL = f[2]
			if m := summaryCreds.FindStringSubmatch(line); m != nil {
				d.user, d.password = m[1], m[2]
			}
		case len(f) >= 3 && f[0] == "Path" && f[1] == "app":
			d.pathURL = f[2]
		case len(f) >= 3 && f[0] == "Subdomain" && f[1] == "app":
			d.subdomainURL = f[2]
		case len(f) >= 2 && f[0] == "Terminal":
			d.terminalURL = f[1]
		case len(f) >= 7 && f[0] == "Metrics":
			d.metricsURLs = map[string]string{f[1]: f[2], f[3]: f[4], f[5]: f[6]}
		}
	}
	if d.loginURL == "" || d.pathURL == "" || d.subdomainURL == "" || d.terminalURL == "" || d.user == "" || len(d.metricsURLs) != 3 {
		return nil, fmt.Errorf("wsedge dev's summary lacks the login URL and credentials, the path app, the subdomain app, the terminal or the metrics URLs:\n%s", d.stdout.String())
	}
	return d, nil
}

// interrupt sends SIGINT to wsedge dev's process group, as Ctrl-C in a
// terminal does, and checks that it exits 0 within a few seconds and leaves
// no process of its group behind, Envoy included.
func (d *wsedgeDev) interrupt(t *testing.T) {
	t.Helper()
	pgid := d.cmd.Process.Pid
	before := groupProcesses(pgid)
	envoyPID := 0
	for pid, comm := range before {
		if comm == "envoy" {
			envoyPID = pid
		}
	}
	if envoyPID == 0 {
		t.Errorf("no Envoy process in wsedge dev's process group before Ctrl-C (it has %v)", before)
	}
	t.Logf("before Ctrl-C: wsedge dev pid %d, Envoy pid %d, %d processes in the group", pgid, envoyPID, len(before))
	start := time.Now()
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatalf("SIGINT: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("wsedge dev still running 10s after SIGINT; stderr:\n%s", d.stderr.String())
	}
	t.Logf("wsedge dev exited %v after SIGINT", time.Since(start).Round(time.Millisecond))
	if d.waitErr != nil {
		t.Errorf("wsedge dev after SIGINT: %v, want exit status 0; stderr:\n%s", d.waitErr, d.stderr.String())
	}
	if !strings.Contains(d.stderr.String(), "wsedge dev: stopped.") {
		t.Errorf("wsedge dev did not say it stopped; stderr:\n%s", d.stderr.String())
	}
	// Its children are gone once it is: it waits for them.
	left := groupProcesses(pgid)
	if envoyPID != 0 {
		if _, ok := left[envoyPID]; ok {
			t.Errorf("Envoy (pid %d) still running after wsedge dev exited", envoyPID)
		}
	}
	if len(left) > 0 {
		t.Errorf("processes of wsedge dev's group left behind: %v", left)
	}
}

// groupProcesses is every live (not zombie) process of process group pgid,
// pid → command name, from /proc.
func groupProcesses(pgid int) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(s[closing+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			out[pid] = s[open+1 : closing]
		}
	}
	return out
}

// checkSameOriginWarm has the app's page call its own app as pages do: a
// POST with fetch and a websocket, both with Origin. Neither may cost an
// ext_proc call (the dialer answers CORS for the page's own origin), and
// the POST's answer allows that origin, as coderd's CORS handler does.
// Chromium marks the POST Sec-Fetch-Site: same-origin, so it takes the
// warm twin for same-origin requests (no jwt_authn either); it sends no
// Sec-Fetch-* on a websocket handshake (seen with Chromium 156), which
// takes the websocket twin (no jwt_authn: the dialer checks the token).
func checkSameOriginWarm(t *testing.T, ctx context.Context, dev *wsedgeDev, appHost string) {
	t.Helper()
	before := extprocMessages(t, dev.metricsURLs["authz"])
	got, err := runIn(ctx, 20*time.Second, chromedp.Evaluate[string](`(async () => {
		const r = await fetch("/echo?format=json", {method: "POST", body: "x=1"});
		const seen = await r.json();
		const ws = new WebSocket("ws://" + location.host + "/ws");
		await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
		const echoed = new Promise((ok) => { ws.onmessage = (m) => ok(m.data); });
		ws.send("same origin");
		const back = await echoed;
		ws.close();
		return JSON.stringify({status: r.status, id: r.headers.get("X-Coder-Request-Id"),
			acao: r.headers.get("Access-Control-Allow-Origin"), method: seen.method, back: back});
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("the page's own fetch and websocket: %v", err)
	}
	var r struct {
		Status           int
		ID, ACAO, Method string
		Back             string
	}
	if err := json.Unmarshal([]byte(got), &r); err != nil {
		t.Fatalf("page answered %q: %v", got, err)
	}
	if r.Status != 200 || r.Method != "POST" || r.Back != "same origin" {
		t.Errorf("the page's own POST and websocket: %+v, want 200, the app seeing POST, the message echoed", r)
	}
	if want := "http://" + appHost; r.ACAO != want {
		t.Errorf("the page's own POST: Access-Control-Allow-Origin %q, want %q", r.ACAO, want)
	}
	// The access log names the route of each (a websocket is logged when
	// it ends, so wait for it).
	routes := func() (post, ws string) {
		b, _ := os.ReadFile(filepath.Join(dev.dir, "stdout.log"))
		for _, l := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["authority"] != appHost {
				continue
			}
			route, _ := m["route"].(string)
			switch {
			case m["request_id"] == r.ID:
				post = route
			case m["path"] == "/ws":
				ws = route
			}
		}
		return post, ws
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		post, ws := routes()
		if post != "" && ws != "" {
			if post != "subdomain-app-warm-same-origin" {
				t.Errorf("the page's own POST took route %q, want subdomain-app-warm-same-origin", post)
			}
			if ws != "subdomain-app-warm-websocket" && ws != "subdomain-app-warm-same-origin" {
				t.Errorf("the page's own websocket took route %q, want a warm twin", ws)
			}
			t.Logf("the page's own POST took route %s, its websocket %s", post, ws)
			if n := extprocMessages(t, dev.metricsURLs["authz"]) - before; n != 0 {
				t.Errorf("ext_proc handled %v messages for the page's own requests", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("no access log lines for the page's own POST (%q) and websocket (%q)", post, ws)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// extprocMessages sums wsedge_extproc_messages_total on authz's metrics
// endpoint (0 before the first message).
func extprocMessages(t *testing.T, metricsURL string) float64 {
	t.Helper()
	res, err := http.Get(metricsURL)
	if err != nil {
		t.Fatalf("authz metrics: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("authz metrics: %v", err)
	}
	var sum float64
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "wsedge_extproc_messages_total{"); ok {
			if i := strings.LastIndexByte(rest, ' '); i >= 0 {
				v, err := strconv.ParseFloat(rest[i+1:], 64)
				if err != nil {
					t.Fatalf("authz metrics line %q: %v", l, err)
				}
				sum += v
			}
		}
	}
	return sum
}
