package devagent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// loopbackListen hands out loopback listeners and remembers which agent
// port each one stands for.
type loopbackListen struct {
	mu    sync.Mutex
	addrs map[uint16]string
	lns   []net.Listener
	fail  uint16 // port whose Listen fails
}

func (l *loopbackListen) listen(port uint16) (net.Listener, error) {
	if port == l.fail {
		return nil, errors.New("port taken")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs == nil {
		l.addrs = map[uint16]string{}
	}
	l.addrs[port] = ln.Addr().String()
	l.lns = append(l.lns, ln)
	return ln, nil
}

func (l *loopbackListen) waitAddr(t *testing.T, port uint16) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		a, ok := l.addrs[port]
		l.mu.Unlock()
		if ok {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d never listened", port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestAgentServesAppsAndPTY(t *testing.T) {
	agentID := uuid.MustParse("123e4567-e89b-12d3-a456-426614174000")
	l := &loopbackListen{}
	a := New(Options{
		AgentID: agentID,
		Apps: []AppSpec{
			{Port: 8080, Kind: KindHTTP},
			{Port: 8081, Kind: KindWebsocket},
			{Port: 8443, Kind: KindHTTPS},
		},
		Logger: quietLogger(),
		Listen: l.listen,
		PTY:    PTYOptions{Shell: "/bin/sh", Env: []string{"PATH=/usr/bin:/bin", "PS1=$ "}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	// HTTP demo app.
	resp, body := get(t, newReq(t, http.MethodGet, "http://"+l.waitAddr(t, 8080)+"/echo"))
	var rec Received
	if err := json.Unmarshal(body, &rec); err != nil || resp.StatusCode != 200 || rec.Path != "/echo" || rec.TLS {
		t.Fatalf("http app: %d %+v %v", resp.StatusCode, rec, err)
	}

	// Websocket echo app.
	testWebsocketEcho(t, "ws://"+l.waitAddr(t, 8081)+"/")

	// HTTPS demo app with a self-signed certificate naming the agent's
	// tailnet IP.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	hresp, err := (&http.Client{Transport: tr}).Get("https://" + l.waitAddr(t, 8443) + "/?format=json")
	if err != nil {
		t.Fatalf("https app: %v", err)
	}
	hbody, _ := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if err := json.Unmarshal(hbody, &rec); err != nil || !rec.TLS {
		t.Fatalf("https app: %+v %v", rec, err)
	}
	cert := hresp.TLS.PeerCertificates[0]
	if len(cert.IPAddresses) == 0 || cert.IPAddresses[0].String() != "fd7a:115c:a1e0:12d3:a456:4266:1417:4000" {
		t.Errorf("certificate IPs %v", cert.IPAddresses)
	}
	// HTTP/2 is negotiated when the client offers it (ALPN "h2").
	tr2 := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr2.CloseIdleConnections()
	h2resp, err := (&http.Client{Transport: tr2}).Get("https://" + l.waitAddr(t, 8443) + "/bytes?n=100000")
	if err != nil {
		t.Fatalf("https app over h2: %v", err)
	}
	h2body, _ := io.ReadAll(h2resp.Body)
	h2resp.Body.Close()
	if h2resp.ProtoMajor != 2 || len(h2body) != 100000 {
		t.Errorf("h2: proto %s, %d bytes", h2resp.Proto, len(h2body))
	}

	// Plain HTTP on the TLS port fails instead of being served.
	if resp, err := http.Get("http://" + l.waitAddr(t, 8443) + "/"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && strings.Contains(string(b), DemoAppTitle) {
			t.Error("HTTPS port answered plain HTTP with the app")
		}
	}

	// Reconnecting PTY on port 2.
	h := &ptyHarness{t: t, addr: l.waitAddr(t, ReconnectingPTYPort)}
	c := h.dial(InitFrame{ID: uuid.New(), Height: 24, Width: 80})
	c.run("echo via-agent-$((6*7))")
	c.waitFor(`via-agent-42\r\n`)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	c.waitClosed() // the shell ended with the agent
	for _, port := range []uint16{8080, ReconnectingPTYPort} {
		if c, err := net.DialTimeout("tcp", l.waitAddr(t, port), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still accepting after Run returned", port)
		}
	}
}

func TestAgentRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		apps []AppSpec
	}{
		{"reserved port", []AppSpec{{Port: 2, Kind: KindHTTP}}},
		{"port below 9", []AppSpec{{Port: 8, Kind: KindHTTP}}},
		{"duplicate port", []AppSpec{{Port: 9000, Kind: KindHTTP}, {Port: 9000, Kind: KindHTTPS}}},
		{"unknown kind", []AppSpec{{Port: 9000, Kind: "gopher"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &loopbackListen{}
			err := New(Options{Apps: tc.apps, Listen: l.listen, Logger: quietLogger()}).Run(context.Background())
			if !errors.Is(err, ErrBadApp) {
				t.Fatalf("err = %v, want ErrBadApp", err)
			}
			if len(l.lns) != 0 {
				t.Errorf("opened %d listeners before validating", len(l.lns))
			}
		})
	}
	if err := New(Options{}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Listen is required") {
		t.Fatalf("no Listen: %v", err)
	}
}

func TestAgentListenFailureClosesOthers(t *testing.T) {
	l := &loopbackListen{fail: 9001}
	err := New(Options{
		Apps:   []AppSpec{{Port: 9000, Kind: KindHTTP}, {Port: 9001, Kind: KindHTTP}},
		Listen: l.listen, Logger: quietLogger(),
	}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "app port 9001") {
		t.Fatalf("err = %v", err)
	}
	for _, ln := range l.lns {
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%s left open", ln.Addr())
		}
	}
}
