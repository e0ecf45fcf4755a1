package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsedge/wsedge/envoy"
)

// TestSmokeTLS runs the TLS variant of the bootstrap: HTTP/2 to the edge via
// ALPN for ordinary requests, HTTP/1.1 websocket upgrades, and the same
// header rules.
func TestSmokeTLS(t *testing.T) {
	certFile, keyFile, roots := testCert(t)
	az := &smokeAuthz{}
	st := startEdge(t, withSmokeFakes(az), WithTLS(&tls.Config{RootCAs: roots}), WithEnvoy(func(c *envoy.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.RedirectListenAddr = netip.MustParseAddrPort("127.0.0.1:0")
	}))

	t.Run("plain HTTP is redirected to https and never checked or forwarded", func(t *testing.T) {
		checks := az.count()
		c := &http.Client{
			Transport:     &http.Transport{DialContext: dialTo(st.envoy.ListenerAddr(t, envoy.RedirectListenerName).String())},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		res, err := c.Get("http://code--main--dev--alice.apps.wsedge.test/a/b?c=d")
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "https://code--main--dev--alice.apps.wsedge.test/a/b?c=d" {
			t.Fatalf("status %d Location %q", res.StatusCode, res.Header.Get("Location"))
		}
		if az.count() != checks {
			t.Errorf("a plain-HTTP request reached authz")
		}
	})

	t.Run("HTTP/2 request is checked and forwarded", func(t *testing.T) {
		resp, body := st.roundTrip(t, "GET", "https://code--main--dev--alice.apps.wsedge.test/index.html", http.Header{
			"X-Wsedge-App-Token": {"forged"},
		})
		if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" {
			t.Fatalf("%s %d: %s", resp.Proto, resp.StatusCode, body)
		}
		s := upstreamSaw(t, body)
		if got := s.Header["X-Wsedge-App-Token"]; len(got) != 1 || got[0] != authzToken {
			t.Errorf("upstream token %q", got)
		}
		if s.Host != "code--main--dev--alice.apps.wsedge.test" {
			t.Errorf("upstream host %q", s.Host)
		}
		if got := az.last().GetScheme(); got != "https" {
			t.Errorf("authz scheme %q", got)
		}
	})

	t.Run("denied over HTTP/2", func(t *testing.T) {
		resp, body := st.roundTrip(t, "GET", "https://"+accessHost+"/@alice/deny/apps/code/", nil)
		if resp.StatusCode != http.StatusForbidden || body != deniedBody || resp.Header.Get("X-Denied-By") != "smoke-authz" {
			t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
		}
	})

	t.Run("websocket over TLS", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _, err := st.dialWebsocket(ctx, "wss://"+accessHost+"/@alice/dev.main/apps/code/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if _, first, err := c.Read(ctx); err != nil || string(first) != authzToken {
			t.Fatalf("first message %q, %v", first, err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, echo, err := c.Read(ctx); err != nil || string(echo) != "ping" {
			t.Fatalf("echo %q, %v", echo, err)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	})
}
