package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserWebsocketOverHTTP2 drives Debian's headless Chromium against
// `wsedge dev --tls`: once the browser has signed in and its connection to
// the edge speaks HTTP/2, a page's websocket to its own app goes over that
// connection as an RFC 8441 extended CONNECT (no connection of its own),
// Envoy's websocket warm twin takes it, and a message comes back through
// the dialer and the tailnet from the app's echo. Envoy's access log says
// which protocol the handshake came in.
func TestBrowserWebsocketOverHTTP2(t *testing.T) {
	chrome := chromiumBinary(t)
	art := artifactsDir(t)
	dev := startWsedgeDev(t, art, "--tls")
	if !strings.HasPrefix(dev.subdomainURL, "https://") {
		t.Fatalf("wsedge dev --tls printed subdomain app %q, want an https URL", dev.subdomainURL)
	}
	// The dev edge's certificate is self-signed on the spot; only loopback
	// names resolve (startChromium's host rules).
	ctx := startChromiumWith(t, chrome, art, []chromedp.ExecAllocatorOption{chromedp.Flag("ignore-certificate-errors", true)}, dev.port, dev.primaryPort)
	if _, err := runIn(ctx, 30*time.Second, chromedp.Steps(
		chromedp.Navigate(dev.subdomainURL),
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
	)); err != nil {
		t.Fatalf("open %s: no login form: %v", dev.subdomainURL, err)
	}
	if _, err := runIn(ctx, 30*time.Second, signInToApp(dev)); err != nil {
		t.Fatalf("sign in as %s: the app's page never came: %v (now at %s)", dev.user, err, location(t, ctx))
	}

	const msg = "hello over the page connection"
	got, err := runIn(ctx, 20*time.Second, chromedp.Evaluate[string](`new Promise((ok, fail) => {
		const ws = new WebSocket('wss://' + location.host + '/ws');
		ws.onopen = () => ws.send('`+msg+`');
		ws.onmessage = (e) => { ws.close(); ok(String(e.data)); };
		ws.onerror = () => fail(new Error('websocket error'));
		setTimeout(() => fail(new Error('no echo within 10 s')), 10000);
	})`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("websocket from the app's page: %v", err)
	}
	if got != msg {
		t.Errorf("the app echoed %q, want %q", got, msg)
	}

	host := strings.TrimSuffix(strings.TrimPrefix(dev.subdomainURL, "https://"), "/")
	line := accessLogLineIn(t, filepath.Join(dev.dir, "stdout.log"), "the access log line of the page's websocket", func(m map[string]any) bool {
		return m["path"] == "/ws" && m["authority"] == host
	})
	if line["protocol"] != "HTTP/2" || line["upgrade"] != "websocket" {
		t.Errorf("the websocket came as protocol %v, upgrade %v; want HTTP/2 and websocket (RFC 8441 on the page's connection): %v", line["protocol"], line["upgrade"], line)
	}
	if line["route"] != "subdomain-app-warm-websocket" {
		t.Errorf("the websocket took route %v, want subdomain-app-warm-websocket: %v", line["route"], line)
	}
	// The log keeps the dialer's 101; the browser's stream got its 200.
	if line["status"] != float64(101) {
		t.Errorf("the access log has status %v for the websocket, want the dialer's 101: %v", line["status"], line)
	}
}
