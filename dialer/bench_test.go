package dialer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

// BenchmarkProxyGET measures a small GET through the dialer to a loopback
// app, token verification and stats included, over kept-alive
// connections: with authz's token header (cold path), and as Envoy's
// fast path forwards a warm request (the token cookie among the
// browser's others, Envoy's forwarding headers, no token header).
func BenchmarkProxyGET(b *testing.B) {
	e := newEnv(b, nil).start()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer app.Close()
	port := appPort(b, app)
	e.agents.set(port, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))
	const url = "http://" + testAccessHost + "/@alice/dev.main/apps/code/"

	b.Run("header", func(b *testing.B) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set(edgewire.AppTokenHeader, tok)
		benchGET(b, e.client, req)
	})
	b.Run("fast-path", func(b *testing.B) {
		req, _ := http.NewRequest("GET", url+"index.html?v=3", nil)
		req.Header.Set("Cookie", "theme=dark; "+tokens.SignedAppTokenCookie+"="+tok+"; lang=en")
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		req.Header.Set("User-Agent", "Mozilla/5.0 (bench)")
		req.Header.Set("X-Forwarded-For", "192.0.2.10")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Request-Id", "3f0e8a52-7d0c-4c8e-9a43-6f7b0f1f2a11")
		req.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", "15000")
		benchGET(b, e.client, req)
	})
}

func benchGET(b *testing.B, c *http.Client, req *http.Request) {
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkDirectGET is the same request straight to the app, for
// comparison.
func BenchmarkDirectGET(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer app.Close()
	c := app.Client()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(app.URL)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkProxyUpgrade opens a protocol switch through the dialer to a
// loopback app, echoes one message and closes it: what a websocket's
// handshake costs the dialer (with the client's and the app's work).
func BenchmarkProxyUpgrade(b *testing.B) {
	e := newEnv(b, nil).start()
	app := rawUpgradeApp(b)
	port := appPort(b, app)
	e.agents.set(port, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))
	got := make([]byte, 4)
	b.ReportAllocs()
	for b.Loop() {
		c, br := openRawUpgrade(b, e.addr, tok, nil)
		if _, err := io.WriteString(c, "ping"); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
			b.Fatalf("echo %q, %v", got, err)
		}
		_ = c.Close()
	}
}
