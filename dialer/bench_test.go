package dialer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wsedge/wsedge/edgewire"
)

// BenchmarkProxyGET measures a small GET through the dialer to a loopback
// app, token verification and stats included, over kept-alive connections.
func BenchmarkProxyGET(b *testing.B) {
	e := newEnv(b, nil).start()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer app.Close()
	port := appPort(b, app)
	e.agents.set(port, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))
	req, _ := http.NewRequest("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", nil)
	req.Header.Set(edgewire.AppTokenHeader, tok)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := e.client.Do(req)
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
