package dialer

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestTransportPerAgentAndEviction(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	e := newEnv(t, nil)
	c := newTransportCache(&loopAgents{}, time.Second, DefaultResponseTimeout, clock, e.srv.metrics)
	a, b := uuid.New(), uuid.New()
	ta := c.get(a)
	if c.get(a) != ta || c.get(b) == ta {
		t.Fatal("transports are not per agent")
	}
	if tt := ta.t; tt.MaxIdleConnsPerHost != maxIdleConnsPerAgent || tt.IdleConnTimeout != 10*time.Minute || tt.ResponseHeaderTimeout != 10*time.Second || tt.Proxy != nil || !tt.TLSClientConfig.InsecureSkipVerify {
		t.Fatalf("transport settings %+v", ta)
	}
	now = now.Add(20 * time.Minute)
	c.get(b)
	c.evictIdle(now.Add(-transportIdleEvict + time.Minute)) // a unused for 21 min of 30: kept
	if len(c.m) != 2 {
		t.Fatalf("evicted too early: %d left", len(c.m))
	}
	now = now.Add(15 * time.Minute)
	c.evictIdle(now.Add(-transportIdleEvict))
	if _, ok := c.m[a]; ok || len(c.m) != 1 {
		t.Fatalf("idle agent transport kept: %d left", len(c.m))
	}
}

func TestPercentEncodedAtAndPlainHTTPAccessURL(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.AccessURL = &url.URL{Scheme: "http", Host: testAccessHost} }).start()
	addr, heads := rawApp(t)
	e.agents.set(8080, addr)
	// Some apps mis-encode "@": the token's base path keeps the "@" form.
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080/base")
	resp := e.do("GET", "http://"+testAccessHost+"/%40alice/dev.main/apps/code/a%20b", tok, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	head := <-heads
	if !strings.HasPrefix(head, "GET /base/a%20b HTTP/1.1\r\n") || !strings.Contains(head, "\r\nX-Forwarded-Proto: http\r\n") {
		t.Fatalf("head:\n%s", head)
	}
}
