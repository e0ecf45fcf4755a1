package dialer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

// gatedApp answers once gate is closed; arrived counts requests waiting.
func gatedApp(t *testing.T, gate chan struct{}, arrived *atomic.Int32) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
			if err != nil {
				return
			}
			defer c.CloseNow()
			_, _, _ = c.Read(r.Context())
			return
		}
		arrived.Add(1)
		<-gate
		_, _ = io.WriteString(w, "app")
	}))
	t.Cleanup(app.Close)
	return app
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// assertShed checks a 503 with Retry-After in the shape the client asked for.
func assertShed(t *testing.T, resp *http.Response, wantType string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; body %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), wantType) {
		t.Errorf("content type %q, want %s", resp.Header.Get("Content-Type"), wantType)
	}
	if wantType == "application/json" {
		var r coderhttp.Response
		if err := json.Unmarshal(body, &r); err != nil || r.Message != "Service Unavailable" {
			t.Errorf("body %s: %v", body, err)
		}
	}
}

// TestRequestsBeyondTheLimitsAre503: with every slot (in total, or for
// one agent) held by requests the app has not answered, the next request
// gets 503 with Retry-After at once and never reaches the app; once the
// app answers, requests are served again.
func TestRequestsBeyondTheLimitsAre503(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits Limits
		label  string
	}{
		{"total", Limits{Requests: 2, RequestsPerAgent: 10}, "requests"},
		{"per agent", Limits{Requests: 10, RequestsPerAgent: 2}, "agent_requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Limits = tc.limits }).start()
			gate := make(chan struct{})
			var arrived atomic.Int32
			app := gatedApp(t, gate, &arrived)
			e.agents.set(8080, app.Listener.Addr().String())
			url := "http://" + testAccessHost + "/@alice/dev.main/apps/code/"
			tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					resp := e.do("GET", url, tok, nil)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("held request: %d", resp.StatusCode)
					}
				})
			}
			waitUntil(t, "two requests at the app", func() bool { return arrived.Load() == 2 })
			if m := scrape(t, e.srv); !strings.Contains(m, "wsedge_dialer_requests_in_flight 2") {
				t.Errorf("in-flight gauge does not show the 2 held requests")
			}
			assertShed(t, e.do("GET", url, tok, http.Header{"Accept": {"application/json"}}), "application/json")
			assertShed(t, e.do("GET", url, tok, http.Header{"Accept": {"text/html"}}), "text/html")
			if n := arrived.Load(); n != 2 {
				t.Fatalf("the app saw %d requests, want 2", n)
			}
			close(gate)
			wg.Wait()
			resp := e.do("GET", url, tok, nil)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("after the burst: %d", resp.StatusCode)
			}
			metrics := scrape(t, e.srv)
			if want := `wsedge_dialer_shed_total{limit="` + tc.label + `"} 2`; !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %s", want)
			}
		})
	}
}

// TestHeldWebsocketsDoNotHoldSlots: a request gives its slot back once
// the app has answered, so open websockets do not starve new requests.
func TestHeldWebsocketsDoNotHoldSlots(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Limits = Limits{Requests: 1} }).start()
	gate := make(chan struct{})
	close(gate)
	var arrived atomic.Int32
	app := gatedApp(t, gate, &arrived)
	e.agents.set(8080, app.Listener.Addr().String())
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		c, resp, err := websocket.Dial(ctx, "ws://"+testAccessHost+"/@alice/dev.main/apps/code/ws", &websocket.DialOptions{
			HTTPClient: e.client,
			HTTPHeader: http.Header{edgewire.AppTokenHeader: {tok}},
		})
		if err != nil {
			t.Fatalf("websocket: %v (%v)", err, resp)
		}
		defer c.CloseNow()
	}
	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with 3 websockets open: %d, want 200", resp.StatusCode)
	}
}

// TestDialsBeyondTheLimitAre503: with the one dial slot taken by a dial
// to an unreachable agent, another request is answered 503 at once
// rather than a 502 after the dial timeout.
func TestDialsBeyondTheLimitAre503(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Limits = Limits{Dials: 1} }).start()
	e.agents.block = true
	url := "http://" + testAccessHost + "/@alice/dev.main/apps/code/"
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	done := make(chan int, 1)
	go func() {
		resp := e.do("GET", url, tok, nil)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	waitUntil(t, "the first dial", func() bool { return len(e.agents.dialed()) == 1 })
	start := time.Now()
	assertShed(t, e.do("GET", url, tok, http.Header{"Accept": {"application/json"}}), "application/json")
	if took := time.Since(start); took > time.Second {
		t.Errorf("shed answer took %v", took)
	}
	if code := <-done; code != http.StatusBadGateway {
		t.Fatalf("the blocked dial ended with %d, want 502", code)
	}
}

func scrape(t *testing.T, s *Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestTerminalsBeyondTheLimits: a terminal over the request limit gets an
// HTTP 503 with Retry-After before any upgrade; one that finds every dial
// slot taken is upgraded and closed with 1013 (Try Again Later), not left
// waiting for the dial timeout.
func TestTerminalsBeyondTheLimits(t *testing.T) {
	// open starts a terminal whose dial hangs (an unreachable agent).
	open := func(t *testing.T, limits Limits) (*testEnv, string) {
		e := newEnv(t, func(o *Options) { o.Limits = limits }).start()
		e.agents.block = true
		tok := e.token(terminalRequest(testAgentID), "")
		first, _, err := e.dialTerminal(context.Background(), "reconnect="+uuid.NewString(), "", tok)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { first.CloseNow() })
		waitUntil(t, "the first terminal's dial", func() bool { return len(e.agents.dialed()) == 1 })
		return e, tok
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("requests", func(t *testing.T) {
		e, tok := open(t, Limits{Requests: 1})
		c, res, err := e.dialTerminal(ctx, "reconnect="+uuid.NewString(), "", tok)
		if err == nil {
			c.CloseNow()
			t.Fatal("a terminal over the request limit was upgraded")
		}
		if res == nil || res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "1" {
			t.Fatalf("over the request limit: %v (%v)", err, res)
		}
	})
	t.Run("dials", func(t *testing.T) {
		e, tok := open(t, Limits{Dials: 1})
		second, _, err := e.dialTerminal(ctx, "reconnect="+uuid.NewString(), "", tok)
		if err != nil {
			t.Fatal(err)
		}
		defer second.CloseNow()
		start := time.Now()
		_, _, err = second.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusTryAgainLater {
			t.Fatalf("second terminal: %v, want a 1013 close", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("1013 after %v", took)
		}
		if m := scrape(t, e.srv); !strings.Contains(m, `wsedge_dialer_shed_total{limit="dials"} 1`) {
			t.Errorf("dial shed not counted:\n%s", m)
		}
	})
}

// TestWarmRequestsLeaveTheReserve: warm requests (a token cookie, no
// authz) may take all but an eighth of the slots; the rest stay for
// requests authz authorized, so a warm flood does not shed every new
// session whose token authz has just checked or issued.
func TestWarmRequestsLeaveTheReserve(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Limits = Limits{Requests: 8, RequestsPerAgent: 64} }).start()
	gate := make(chan struct{})
	var arrived atomic.Int32
	app := gatedApp(t, gate, &arrived)
	open := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(open) // before the app closes, should a request be held
	e.agents.set(8080, app.Listener.Addr().String())
	url := "http://" + testAccessHost + "/@alice/dev.main/apps/code/"
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	cookie := tokens.SignedAppTokenCookie + "=" + tok
	var wg sync.WaitGroup
	held := func(n int32, send func() *http.Response) {
		wg.Go(func() {
			resp := send()
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("held request: %d", resp.StatusCode)
			}
		})
		waitUntil(t, "the held requests at the app", func() bool { return arrived.Load() == n })
	}
	for i := range int32(7) {
		held(i+1, func() *http.Response { return e.doCookies(url, cookie, nil) })
	}
	acceptJSON := http.Header{"Accept": {"application/json"}}
	// The eighth slot is the reserve: a warm request is shed…
	assertShed(t, answeredAtOnce(t, func() *http.Response { return e.doCookies(url, cookie, acceptJSON) }), "application/json")
	// …a request authz authorized takes it…
	held(8, func() *http.Response { return e.do("GET", url, tok, nil) })
	// …and then nothing fits.
	assertShed(t, answeredAtOnce(t, func() *http.Response { return e.do("GET", url, tok, acceptJSON) }), "application/json")
	if n := arrived.Load(); n != 8 {
		t.Fatalf("the app saw %d requests, want 8", n)
	}
	open()
	wg.Wait()
	if m := scrape(t, e.srv); !strings.Contains(m, `wsedge_dialer_shed_total{limit="requests"} 2`) {
		t.Errorf("metrics lack 2 sheds by the requests limit")
	}
}

// answeredAtOnce is send's response, or a failure when none comes within
// five seconds (the request was admitted and waits at the gated app).
func answeredAtOnce(t *testing.T, send func() *http.Response) *http.Response {
	t.Helper()
	got := make(chan *http.Response, 1)
	go func() { got <- send() }()
	select {
	case resp := <-got:
		return resp
	case <-time.After(5 * time.Second):
		t.Fatal("no answer within 5 s: the request was admitted")
		return nil
	}
}
