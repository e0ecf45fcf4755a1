package e2e

// Overload: a burst several times every configured limit, through real
// Envoy, authz, the dialer and the tailnet. Every answer must be honest —
// served (200, or an upgraded websocket), rate limited (429) or shed
// (503 with Retry-After) — the primary must never see more issue calls at
// once than authz allows, resources must come back to where they were,
// and the service must answer normally within seconds of the burst.
// TestBurstShedsHonestly is the short variant in `make test`;
// TestSoakBurst the long one in `make soak`, whose figures (shed
// fraction, p99 of served requests during the burst, recovery time) go
// to bench/results/soak.md.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsedge/wsedge/authz"
	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/tokens"
)

// burstIssueCalls is authz's issue-call limit during the burst.
const burstIssueCalls = 2

// burstLimits are small, so a burst of a few hundred requests from a few
// dozen clients is several times over each of them.
func burstLimits(primaryInFlight *inFlight) func(*devstack.DevConfig) {
	return func(c *devstack.DevConfig) {
		c.AuthzLimits = authz.Limits{Checks: 8, IssueCalls: burstIssueCalls}
		c.DialerLimits = dialer.Limits{Requests: 8, RequestsPerAgent: 8, Dials: 4}
		c.Envoy = func(e *envoy.Config) {
			// authz's cluster carries ext_proc streams besides Checks:
			// room for both, so authz's own limits are what sheds Checks.
			e.Limits.AuthzMaxRequests = 128
			e.Limits.DialerMaxRequests = 32
			e.Limits.DialerMaxPendingRequests = 8
		}
		c.PrimaryMiddleware = primaryInFlight.wrap
	}
}

// inFlight counts concurrent issue calls at the primary.
type inFlight struct {
	now, max atomic.Int64
}

func (f *inFlight) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/issue-signed-app-token") {
			h.ServeHTTP(w, r)
			return
		}
		n := f.now.Add(1)
		defer f.now.Add(-1)
		for m := f.max.Load(); n > m && !f.max.CompareAndSwap(m, n); m = f.max.Load() {
		}
		h.ServeHTTP(w, r)
	})
}

// burstAnswer is one request of the burst as its client saw it.
type burstAnswer struct {
	kind       string // warm, cold, websocket
	status     int    // 101 for an upgraded websocket
	retryAfter string
	wsedge     bool // a wsedge shed answer (authz's or the dialer's words), not Envoy's
	took       time.Duration
	err        error
}

func (a burstAnswer) served() bool {
	return a.err == nil && (a.status == http.StatusOK || a.status == http.StatusSwitchingProtocols)
}

func (a burstAnswer) shed() bool {
	return a.err == nil && (a.status == http.StatusServiceUnavailable || a.status == http.StatusTooManyRequests) && a.retryAfter != ""
}

// burstClient sends the three kinds of request the burst mixes.
type burstClient struct {
	bp       *edge
	hc       *http.Client
	sessions chan string // fresh sessions for cold requests
}

// warm is a subdomain-app request with a valid signed-token cookie.
func (c *burstClient) warm(ctx context.Context) burstAnswer {
	return c.get(ctx, "warm", "http://"+codeHost+"/bytes?n=1024", http.Header{"Cookie": {c.bp.codeCookie}}, func(b []byte) bool {
		return string(b) == string(devagent.PatternBytes(1024))
	})
}

// cold is a path-app request of a session authz has never seen: it costs
// an issue call to the primary.
func (c *burstClient) cold(ctx context.Context, session string) burstAnswer {
	return c.get(ctx, "cold", sessionApp, http.Header{"Coder-Session-Token": {session}, "Accept": {"application/json"}}, func(b []byte) bool {
		return isEcho(string(b))
	})
}

func (c *burstClient) get(ctx context.Context, kind, u string, h http.Header, ok func([]byte) bool) burstAnswer {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return burstAnswer{kind: kind, err: err}
	}
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return burstAnswer{kind: kind, err: err, took: time.Since(start)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	a := burstAnswer{kind: kind, status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), took: time.Since(start), err: err}
	a.wsedge = isWsedgeShed(b)
	if err == nil && res.StatusCode == http.StatusOK && !ok(b) {
		a.err = fmt.Errorf("%s: 200 with the wrong body (%d bytes)", kind, len(b))
	}
	return a
}

// websocket opens a websocket to the echo app, echoes once and closes.
func (c *burstClient) websocket(ctx context.Context, i int) burstAnswer {
	start := time.Now()
	conn, res, err := websocket.Dial(ctx, "ws://"+echoHost+"/", &websocket.DialOptions{
		HTTPClient: c.hc, HTTPHeader: http.Header{"Cookie": {c.bp.echoCookie}},
	})
	if err != nil {
		if res == nil {
			return burstAnswer{kind: "websocket", err: err, took: time.Since(start)}
		}
		b, _ := io.ReadAll(res.Body)
		return burstAnswer{kind: "websocket", status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), wsedge: isWsedgeShed(b), took: time.Since(start)}
	}
	defer conn.CloseNow()
	if err := echoOnce(ctx, conn, fmt.Sprintf("burst %d", i)); err != nil {
		return burstAnswer{kind: "websocket", status: http.StatusSwitchingProtocols, err: err, took: time.Since(start)}
	}
	took := time.Since(start)
	_ = conn.Close(websocket.StatusNormalClosure, "")
	return burstAnswer{kind: "websocket", status: http.StatusSwitchingProtocols, took: took}
}

// isWsedgeShed: the body is authz's or the dialer's 503 (page or JSON).
func isWsedgeShed(body []byte) bool {
	return strings.Contains(string(body), "handling too many requests right now")
}

// loginSessions signs alice in n times on the dev primary's dashboard.
func (bp *edge) loginSessions(t *testing.T, n int) []string {
	t.Helper()
	primaryAddr := bp.dev.PrimaryAddr.String()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, primaryAddr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	out := make([]string, 0, n)
	for range n {
		res, err := c.PostForm("http://"+dashboardHost+"/login", url.Values{"username": {"alice"}, "password": {"alice"}, "redirect": {"/"}})
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		for _, ck := range res.Cookies() {
			if ck.Name == tokens.SessionTokenCookie {
				out = append(out, ck.Value)
			}
		}
	}
	if len(out) != n {
		t.Fatalf("logged in %d of %d sessions", len(out), n)
	}
	return out
}

// burstResult is what runBurst measured.
type burstResult struct {
	answers  []burstAnswer
	elapsed  time.Duration
	recovery time.Duration
}

// runBurst sends n requests from conc clients at once — every fourth a
// cold request of a fresh session, every fourth a websocket, the rest
// warm — then measures how long until a warm request, a cold request and
// a websocket are all served again.
func runBurst(t *testing.T, s *soak, n, conc int) burstResult {
	t.Helper()
	bp := s.bp
	const spare = 40 // fresh sessions for the recovery probes
	ncold := n/4 + spare
	sessions := make(chan string, ncold)
	for _, x := range bp.loginSessions(t, ncold) {
		sessions <- x
	}
	tr := &http.Transport{DialContext: bp.dial, MaxIdleConnsPerHost: conc, MaxIdleConns: conc}
	defer tr.CloseIdleConnections()
	c := &burstClient{bp: bp, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, sessions: sessions}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	answers := make([]burstAnswer, n)
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				switch i % 4 {
				case 1:
					answers[i] = c.cold(ctx, <-sessions)
				case 3:
					answers[i] = c.websocket(ctx, i)
				default:
					answers[i] = c.warm(ctx)
				}
			}
		})
	}
	wg.Wait()
	res := burstResult{answers: answers, elapsed: time.Since(start)}

	// Recovery: the first moment all three kinds are served again.
	end := time.Now()
	deadline := end.Add(30 * time.Second)
	for {
		var session string
		select {
		case session = <-sessions:
		default:
			t.Fatal("out of fresh sessions for the recovery probes")
		}
		w, cl, ws := c.warm(ctx), c.cold(ctx, session), c.websocket(ctx, -1)
		if w.served() && cl.served() && ws.served() {
			res.recovery = time.Since(end)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered 30 s after the burst: warm %+v, cold %+v, websocket %+v", w, cl, ws)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return res
}

// judgeBurst checks every answer and records the figures.
func judgeBurst(t *testing.T, s *soak, r burstResult, primaryMax int64) {
	t.Helper()
	var served, shed, shedByWsedge int
	byKind := map[string][2]int{}
	for _, a := range r.answers {
		k := byKind[a.kind]
		switch {
		case a.served():
			served++
			k[0]++
			s.latency("served during the burst", a.took)
		case a.shed():
			shed++
			k[1]++
			if a.wsedge {
				shedByWsedge++
			}
		default:
			err := a.err
			if err == nil {
				err = fmt.Errorf("neither served nor shed with Retry-After")
			}
			s.fail(fmt.Sprintf("%s: status %d, Retry-After %q", a.kind, a.status, a.retryAfter), err)
		}
		byKind[a.kind] = k
	}
	for kind, k := range byKind {
		s.set(kind+" served", int64(k[0]))
		s.set(kind+" shed", int64(k[1]))
	}
	s.set("shed by authz or the dialer", int64(shedByWsedge))
	s.set("shed by Envoy", int64(shed-shedByWsedge))
	s.res.Figures["requests in the burst"] = float64(len(r.answers))
	s.res.Figures["burst duration ms"] = float64(r.elapsed.Milliseconds())
	s.res.Figures["shed fraction %"] = 100 * float64(shed) / float64(len(r.answers))
	s.res.Figures["recovery ms"] = float64(r.recovery.Milliseconds())
	s.res.Figures["most concurrent issue calls at the primary"] = float64(primaryMax)
	t.Logf("burst: %d requests in %v: %d served, %d shed (%d by authz/dialer), by kind %v; recovered in %v; at most %d issue calls at once at the primary",
		len(r.answers), r.elapsed.Round(time.Millisecond), served, shed, shedByWsedge, byKind, r.recovery.Round(time.Millisecond), primaryMax)
	t.Logf("burst: Envoy's 503s by response code details: %v", envoy503Details(t, s.bp))
	if shed == 0 {
		t.Errorf("nothing was shed: the burst did not exceed the limits")
	}
	for _, kind := range []string{"warm", "cold", "websocket"} {
		if byKind[kind][0] == 0 {
			t.Errorf("no %s request was served during the burst", kind)
		}
	}
	if primaryMax > burstIssueCalls {
		t.Errorf("the primary saw %d concurrent issue calls, authz allows %d", primaryMax, burstIssueCalls)
	}
	if r.recovery > 5*time.Second {
		t.Errorf("recovered after %v, want within 5 s", r.recovery)
	}
}

// TestBurstShedsHonestly is the short burst of `make test`: 320 requests
// from 64 clients against limits of 8.
func TestBurstShedsHonestly(t *testing.T) {
	var primary inFlight
	bp := startEdge(t, benchPath(WithDev(burstLimits(&primary)))...)
	s := newSoak(t, bp, "a burst of 320 requests from 64 clients (cold, warm, websockets) against limits of 8")
	settle()
	s.sample("before")
	r := runBurst(t, s, 320, 64)
	judgeBurst(t, s, r, primary.max.Load())
	settle()
	s.sample("after")
	s.finish(r.elapsed)
}

// TestSoakBurst is the long variant (`make soak`): bursts of 2,000
// requests from 128 clients, growth judged after the tailnet's TIME-WAIT.
func TestSoakBurst(t *testing.T) {
	soakEnabled(t)
	var primary inFlight
	bp := startEdge(t, benchPath(WithDev(burstLimits(&primary)))...)
	s := newSoak(t, bp, "a burst of 2,000 requests from 128 clients (cold, warm, websockets) against limits of 8 (authz Checks, dialer requests), 2 (issue calls), 4 (dials)")
	settle()
	s.sample("before")
	r := runBurst(t, s, 2000, 128)
	judgeBurst(t, s, r, primary.max.Load())
	s.afterTimeWait()
	s.finish(r.elapsed)
}

// envoy503Details counts the 503s in Envoy's access log by their
// response code details (which limit answered them).
func envoy503Details(t *testing.T, bp *edge) map[string]int {
	t.Helper()
	b, err := os.ReadFile(bp.dev.Envoy.StdoutPath())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && fmt.Sprint(m["status"]) == "503" {
			out[fmt.Sprint(m["details"])]++
		}
	}
	return out
}
