package e2e

// Load and soak through the whole path (issue 10, item 3), run by
// `make soak` (WSEDGE_SOAK=1); `make test` skips them. Each soak starts
// the whole deployment, warms it with the same load it will carry, takes
// a "before" sample of this process (dev primary, authz, the dialer, the
// dev agent) and of Envoy once the load has stopped and connections have
// closed, runs the load while sampling at intervals, stops it, closes and
// settles again, takes the "after" sample, and fails on any unexpected
// error or on growth beyond the limits stated in soakLimits. Results go to
// $WSEDGE_SOAK_OUT (see internal/benchreport/soakresult).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	devagent "github.com/wsedge/wsedge/dev/agent"
	"github.com/wsedge/wsedge/internal/benchreport/soakresult"
)

// soakLimits is the growth a soak tolerates between its before and after
// samples (abs + rel × before). The absolute parts allow for connection
// pools that may differ by a few entries between two idle moments (Envoy
// keeps idle upstream connections to the dialer, each one goroutine and
// one descriptor there); anything that grows with the amount of work done
// (tens of thousands of requests, thousands of sessions) exceeds them.
var soakLimits = []soakresult.Limit{
	{Resource: "goroutines", Abs: 30, Rel: 0.05},
	{Resource: "heap_bytes", Abs: 8 << 20, Rel: 0.25},
	{Resource: "fds", Abs: 20, Rel: 0.05},
	{Resource: "envoy_fds", Abs: 20, Rel: 0.05},
	{Resource: "envoy_heap_bytes", Abs: 8 << 20, Rel: 0.25},
}

func soakEnabled(t *testing.T) {
	t.Helper()
	if os.Getenv("WSEDGE_SOAK") == "" {
		t.Skip("soak: run with WSEDGE_SOAK=1 (make soak)")
	}
}

// envDuration is the duration in env, else def.
func envDuration(t *testing.T, env string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration like 60s", env, v)
	}
	return d
}

// soak records one soak's work, errors and samples.
type soak struct {
	t     *testing.T
	bp    *edge
	start time.Time
	res   soakresult.Result
	mu    sync.Mutex
	// counts and errs are updated by the load goroutines.
	counts map[string]*atomic.Int64
	errs   map[string]int64
	// lat collects latencies by figure name.
	lat map[string][]time.Duration
	// finished is set by finish.
	finished bool
}

func newSoak(t *testing.T, bp *edge, description string) *soak {
	s := &soak{
		t: t, bp: bp,
		res:    soakresult.Result{Name: t.Name(), Description: description, Limits: soakLimits, Figures: map[string]float64{}},
		counts: map[string]*atomic.Int64{},
		errs:   map[string]int64{},
		lat:    map[string][]time.Duration{},
	}
	// A soak that stops early (t.Fatal) still leaves its record.
	t.Cleanup(func() {
		if s.finished {
			return
		}
		s.mu.Lock()
		s.errs["the soak stopped early (its failure is listed at the end)"]++
		s.mu.Unlock()
		s.write()
	})
	return s
}

func (s *soak) count(what string) {
	s.mu.Lock()
	c := s.counts[what]
	if c == nil {
		c = &atomic.Int64{}
		s.counts[what] = c
	}
	s.mu.Unlock()
	c.Add(1)
}

// fail records an unexpected error by kind (its text up to the first
// digit-heavy detail, so that kinds stay few) and logs the first of each.
func (s *soak) fail(kind string, err error) {
	msg := err.Error()
	if len(msg) > 400 && os.Getenv("E2E_LOG") == "" {
		msg = msg[:400]
	}
	key := kind + ": " + msg
	s.mu.Lock()
	s.errs[key]++
	first := s.errs[key] == 1
	s.mu.Unlock()
	if first {
		s.t.Logf("soak: unexpected %s", key)
	}
}

// set overwrites a count.
func (s *soak) set(what string, v int64) {
	s.count(what)
	s.mu.Lock()
	s.counts[what].Store(v)
	s.mu.Unlock()
}

func (s *soak) get(what string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.counts[what]; c != nil {
		return c.Load()
	}
	return 0
}

func (s *soak) latency(figure string, d time.Duration) {
	s.mu.Lock()
	s.lat[figure] = append(s.lat[figure], d)
	s.mu.Unlock()
}

func (s *soak) errorCount() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, v := range s.errs {
		n += v
	}
	return n
}

// sample looks at this process and at Envoy.
func (s *soak) sample(label string) soakresult.Sample {
	s.t.Helper()
	if s.start.IsZero() {
		s.start = time.Now()
	}
	sm := soakresult.Sample{
		At: time.Since(s.start), Label: label,
		HeapBytes: heapAfterGC(), Goroutines: runtime.NumGoroutine(),
		FDs: countFDs("/proc/self/fd"), EnvoyFDs: -1, EnvoyHeapBytes: -1,
	}
	if s.bp.dev.Envoy != nil {
		sm.EnvoyFDs = countFDs(fmt.Sprintf("/proc/%d/fd", s.bp.dev.Envoy.Pid()))
		sm.EnvoyHeapBytes = int64(envoyAllocated(s.t, s.bp.envoyAdmin))
	}
	s.res.Samples = append(s.res.Samples, sm)
	s.t.Logf("soak: %-6s t=%-6s goroutines %d, heap %.1f MiB, fds %d, Envoy fds %d, Envoy heap %.1f MiB",
		label, sm.At.Round(time.Second), sm.Goroutines, float64(sm.HeapBytes)/(1<<20), sm.FDs, sm.EnvoyFDs, float64(sm.EnvoyHeapBytes)/(1<<20))
	return sm
}

func countFDs(dir string) int {
	es, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	return len(es)
}

// settle waits until the goroutine count has not changed for three looks
// in a row (a second apart), at most 20 s: closed connections take a
// moment to unwind on both ends.
func settle() {
	last, same := -1, 0
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && same < 3; {
		time.Sleep(time.Second)
		n := runtime.NumGoroutine()
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
}

// afterTimeWait takes a "closed" sample once the connections are closed,
// then waits out what a closed connection legitimately leaves behind for a
// while (the tailnet's userspace TCP keeps TIME-WAIT endpoints for 60 s;
// the dialer uploads usage stats every 30 s) and takes the "after" sample
// that growth is judged by.
func (s *soak) afterTimeWait() {
	s.sample("closed")
	time.Sleep(65 * time.Second)
	s.sample("after")
}

// sampleEvery samples with label "load" every interval until ctx ends.
func (s *soak) sampleEvery(ctx context.Context, interval time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				s.sample("load")
			}
		}
	})
	return &wg
}

// finish judges the soak, logs its growths and writes its result.
func (s *soak) finish(loadTime time.Duration) {
	t := s.t
	s.finished = true
	s.res.Duration = loadTime
	s.collect()
	s.mu.Lock()
	for fig, ds := range s.lat {
		s.res.Figures[fig+" p50 µs"] = µs(quantile(ds, 0.5))
		s.res.Figures[fig+" p90 µs"] = µs(quantile(ds, 0.90))
		s.res.Figures[fig+" p99 µs"] = µs(quantile(ds, 0.99))
		s.res.Figures[fig+" max µs"] = µs(quantile(ds, 1))
	}
	s.mu.Unlock()
	if n := s.errorCount(); n != 0 {
		t.Errorf("soak: %d unexpected errors: %v", n, s.res.Errors)
	}
	for _, g := range s.res.Growths() {
		t.Logf("soak: %s %.0f → %.0f (growth %.0f, limit %.0f)", g.Resource, g.Before, g.After, g.After-g.Before, g.Allowed(g.Before))
		if !g.OK {
			t.Errorf("soak: %s grew from %.0f to %.0f, over the limit of %.0f", g.Resource, g.Before, g.After, g.Allowed(g.Before))
		}
	}
	s.write()
}

// collect copies the counts and errors into the result.
func (s *soak) collect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.Counts = map[string]int64{}
	for k, v := range s.counts {
		s.res.Counts[k] = v.Load()
	}
	s.res.Errors = s.errs
}

// write stores the result where make soak collects it.
func (s *soak) write() {
	if !s.finished {
		s.collect()
	}
	s.res.Passed = !s.t.Failed()
	if dir := os.Getenv(soakresult.OutDirEnv); dir != "" {
		if err := soakresult.Write(dir, s.res); err != nil {
			s.t.Error(err)
		}
	}
}

// browser is a client that behaves like a browser that went through the
// login hand-off for the subdomain apps and for the path app: a cookie jar
// holding the app session cookies, so that authz can refresh the one-minute
// signed token when it expires, as it does for real users. The dashboard
// host goes to the dev primary, every other host to Envoy.
func (bp *edge) loggedInBrowser(t *testing.T, conc int) *http.Client {
	t.Helper()
	c := bp.newClient(t, clientOpts{jar: true, follow: true, conns: conc})
	for _, appURL := range []string{"http://" + codeHost + "/bytes?n=1", "http://" + accessHost + "/@alice/dev.main/apps/code/bytes?n=1"} {
		res, err := c.Get(appURL)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode == http.StatusOK && res.Request.URL.String() == appURL {
			continue // the dashboard session made it a pure redirect chain
		}
		if res.Request.URL.Host != dashboardHost || res.Request.URL.Path != "/login" {
			t.Fatalf("anonymous %s ended at %s (status %d), want the dashboard login", appURL, res.Request.URL, res.StatusCode)
		}
		form := url.Values{"username": {"alice"}, "password": {"alice"}, "redirect": {res.Request.URL.Query().Get("redirect")}}
		res, err = c.PostForm("http://"+dashboardHost+"/login", form)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Request.URL.String() != appURL {
			t.Fatalf("login for %s ended at %s with status %d", appURL, res.Request.URL, res.StatusCode)
		}
	}
	return c
}

// TestSoakWarmCookieRate sends 1 KiB app requests with a warm token cookie
// at a fixed rate (SOAK_RATE per second, default 200) for SOAK_DURATION
// (default 60 s), open loop: a ticker hands requests to 32 workers, and a
// tick that finds them all busy is counted as missed, not queued. Every
// request must answer 200 with the 1 KiB pattern; each is served by the
// dialer's fast path or decided by authz from the cookie, authz asks the
// primary for at most 1% of them (a token refresh a minute), and nothing
// may grow.
func TestSoakWarmCookieRate(t *testing.T) {
	soakEnabled(t)
	dur := envDuration(t, "SOAK_DURATION", 60*time.Second)
	rate := 200
	if v := os.Getenv("SOAK_RATE"); v != "" {
		if _, err := fmt.Sscan(v, &rate); err != nil || rate <= 0 {
			t.Fatalf("SOAK_RATE=%q", v)
		}
	}
	bp := startEdge(t, benchPath()...)
	s := newSoak(t, bp, fmt.Sprintf("1 KiB responses of the code app through Envoy → dialer → tailnet → agent with a warm token cookie (the fast path: Envoy's warm route, the dialer verifies; authz only when the token expires), open loop at %d requests/s with up to 32 in flight, from a browser that logged in (its cookie jar holds the app session cookie, so authz refreshes the signed token when it expires: Coder's tokens live one minute); every answer must be 200 with the exact bytes, and at least 99%% of the requests must be served from the token cookie (by the dialer's fast path, or by authz without asking the primary).", rate))
	client := bp.loggedInBrowser(t, 32)
	run := func(ctx context.Context, record bool) (sent, missed int64) {
		jobs := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for range jobs {
					d, err := get1KiB(client, codeHost, "")
					if !record {
						continue
					}
					if err != nil {
						s.fail("GET 1 KiB", err)
						continue
					}
					s.count("requests")
					s.latency("1 KiB GET", d)
				}
			})
		}
		tk := time.NewTicker(time.Second / time.Duration(rate))
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-tk.C:
				select {
				case jobs <- struct{}{}:
					sent++
				default:
					missed++
				}
			}
		}
		tk.Stop()
		close(jobs)
		wg.Wait()
		return sent, missed
	}
	warm, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	run(warm, false)
	cancel()
	client.CloseIdleConnections()
	settle()
	s.sample("before")
	issued0, cookie0 := bp.authzChecks(t, "allow_issued"), bp.authzChecks(t, "allow_cookie")
	served0 := counter(t, bp.dialerMetrics, "wsedge_dialer_fast_path_total", "result", "served")

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	sampling := s.sampleEvery(ctx, max(dur/6, 5*time.Second))
	start := time.Now()
	sent, missed := run(ctx, true)
	took := time.Since(start)
	cancel()
	sampling.Wait()

	s.res.Figures["target req/s"] = float64(rate)
	s.res.Figures["achieved req/s"] = float64(s.get("requests")) / took.Seconds()
	s.set("ticks missed (all 32 workers busy)", missed)
	issued, cookie := bp.authzChecks(t, "allow_issued")-issued0, bp.authzChecks(t, "allow_cookie")-cookie0
	s.res.Figures["authz allow_issued during the soak"] = issued
	s.res.Figures["authz allow_cookie during the soak"] = cookie
	served := counter(t, bp.dialerMetrics, "wsedge_dialer_fast_path_total", "result", "served") - served0
	s.res.Figures["dialer fast path served during the soak"] = served
	if issued > 0.01*float64(sent) || issued+cookie+served < float64(sent) {
		t.Errorf("during the soak: %v served by the fast path, %v by authz from the cookie, %v issued, for %d requests sent (want every one of them, at most 1%% issued: one refresh a minute)", served, cookie, issued, sent)
	}
	if missed > int64(rate) { // more than a second's worth
		t.Errorf("the stack fell behind %d requests/s: %d of %d ticks missed", rate, missed, sent+missed)
	}
	client.CloseIdleConnections()
	settle()
	s.sample("after")
	s.finish(took)
}

// TestSoakWebsockets holds 1,000 websocket sessions to the echo app open
// through the whole path for SOAK_DURATION (default 60 s). Each session
// echoes a message at open, then one every 5–15 s (jittered), and a last
// one at the end; then all close. Nothing may fail and nothing may grow.
func TestSoakWebsockets(t *testing.T) {
	soakEnabled(t)
	dur := envDuration(t, "SOAK_DURATION", 60*time.Second)
	bp := startEdge(t, benchPath()...)
	s := newSoak(t, bp, fmt.Sprintf("%d concurrent websocket sessions to the echo app through Envoy → authz → dialer → tailnet → agent, each echoing a message every 5–15 s and once more at the end, then closed.", idleWebsockets))
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	br := bp.loggedInBrowser(t, 1)
	wsClient := &http.Client{Jar: br.Jar, Transport: br.Transport} // websocket.Dial wants no client timeout
	warm, err := openWebsocketsWith(ctx, 50, "ws://"+echoHost+"/", wsClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	warm.closeAll()
	settle()
	s.sample("before")

	openStart := time.Now()
	set, err := openWebsocketsWith(ctx, idleWebsockets, "ws://"+echoHost+"/", wsClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.res.Figures["seconds to open 1,000 sessions"] = time.Since(openStart).Seconds()
	for range idleWebsockets {
		s.count("sessions opened (each echoed once)")
	}
	loadCtx, stopLoad := context.WithTimeout(ctx, dur)
	sampling := s.sampleEvery(loadCtx, max(dur/6, 5*time.Second))
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range set.conns {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-loadCtx.Done():
					return
				case <-time.After(5*time.Second + rand.N(10*time.Second)):
				}
				t0 := time.Now()
				if err := echoOnce(ctx, c, fmt.Sprintf("session %d message %d", i, n)); err != nil {
					s.fail("echo", err)
					return
				}
				s.latency("echo on a held session", time.Since(t0))
				s.count("echoes while held")
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	stopLoad()
	sampling.Wait()
	for i, c := range set.conns {
		wg.Go(func() {
			if err := echoOnce(ctx, c, fmt.Sprintf("session %d last", i)); err != nil {
				s.fail("last echo", err)
				return
			}
			s.count("sessions alive at the end")
		})
	}
	wg.Wait()
	set.closeAll()
	settle()
	s.afterTimeWait()
	s.finish(took)
}

// TestSoakMixed runs a mix of everything for SOAK_MIXED_DURATION
// (default 3 min): warm-cookie 1 KiB GETs of a subdomain app and of a
// path app, requests that carry only the session token (authz issues),
// 1 MiB downloads, and websocket sessions that open, echo a few messages
// and close, over and over. Web terminals are not in the mix: the agent
// keeps a disconnected reconnecting-PTY session for a while on purpose, so
// they would show up as growth that is not a leak.
func TestSoakMixed(t *testing.T) {
	soakEnabled(t)
	dur := envDuration(t, "SOAK_MIXED_DURATION", 3*time.Minute)
	bp := startEdge(t, benchPath()...)
	session, err := bp.dev.Primary.SessionToken("alice")
	if err != nil {
		t.Fatal(err)
	}
	s := newSoak(t, bp, "A mix through the whole path, from a browser that logged in (cookie jar; authz refreshes the one-minute token): 4 clients of warm-cookie 1 KiB GETs (subdomain app), 1 of warm-cookie path-app GETs, 1 sending only the session token (authz issues a token) 5 times a second, 1 MiB downloads every 2 s, and 20 loops of websocket sessions (open, echo 1–5 messages over up to 2 s, close).")
	client := bp.loggedInBrowser(t, 16)
	wsClient := &http.Client{Jar: client.Jar, Transport: client.Transport} // websocket.Dial wants no client timeout
	plain := bp.httpClient(2)
	load := func(ctx context.Context, record bool) {
		var wg sync.WaitGroup
		ok := func(what string, d time.Duration, err error) {
			if !record {
				return
			}
			if err != nil {
				s.fail(what, err)
				return
			}
			s.count(what)
			if d > 0 {
				s.latency(what, d)
			}
		}
		paced := func(every time.Duration, f func()) {
			wg.Go(func() {
				for ctx.Err() == nil {
					f()
					if every > 0 {
						select {
						case <-ctx.Done():
						case <-time.After(every):
						}
					}
				}
			})
		}
		for range 4 {
			paced(2*time.Millisecond, func() {
				d, err := get1KiB(client, codeHost, "")
				ok("subdomain app 1 KiB GET", d, err)
			})
		}
		paced(5*time.Millisecond, func() {
			d, err := getPathApp(client, "", "")
			ok("path app 1 KiB GET", d, err)
		})
		paced(200*time.Millisecond, func() {
			d, err := getPathApp(plain, "", session)
			ok("path app GET with only the session token", d, err)
		})
		paced(2*time.Second, func() {
			err := get1MiB(client, "")
			ok("1 MiB download", 0, err)
		})
		for i := range 20 {
			paced(0, func() {
				err := websocketVisit(ctx, wsClient, i, func(d time.Duration) {
					if record {
						s.latency("websocket open (upgrade through the whole path)", d)
					}
				})
				if ctx.Err() != nil && err != nil {
					return // cut short by the end of the soak
				}
				ok("websocket session (open, echo, close)", 0, err)
			})
		}
		wg.Wait()
	}
	warm, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	load(warm, false)
	cancel()
	client.CloseIdleConnections()
	plain.CloseIdleConnections()
	settle()
	s.sample("before")

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	sampling := s.sampleEvery(ctx, max(dur/8, 5*time.Second))
	start := time.Now()
	load(ctx, true)
	took := time.Since(start)
	cancel()
	sampling.Wait()
	client.CloseIdleConnections()
	plain.CloseIdleConnections()
	settle()
	s.afterTimeWait()
	s.finish(took)
}

// getPathApp fetches /bytes?n=1024 of the code app as a path app, with
// the path-app cookie or only the session token header.
func getPathApp(c *http.Client, cookie, session string) (time.Duration, error) {
	u := "http://" + accessHost + "/@alice/dev.main/apps/code/bytes?n=1024"
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if session != "" {
		req.Header.Set("Coder-Session-Token", session)
	}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return 0, err
	}
	if res.StatusCode != http.StatusOK || string(body) != string(devagent.PatternBytes(1024)) {
		return 0, fmt.Errorf("GET %s: status %d, %d bytes", u, res.StatusCode, len(body))
	}
	return time.Since(start), nil
}

func get1MiB(c *http.Client, cookie string) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+codeHost+"/bytes?n=1048576", nil)
	if err != nil {
		return err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK || string(body) != string(devagent.PatternBytes(1<<20)) {
		return fmt.Errorf("1 MiB: status %d, %d bytes", res.StatusCode, len(body))
	}
	return nil
}

// websocketVisit opens a websocket to the echo app (telling opened how
// long the upgrade and first echo took), echoes 1–5 messages spread over
// up to 2 s, and closes it cleanly.
func websocketVisit(ctx context.Context, hc *http.Client, i int, opened func(time.Duration)) error {
	start := time.Now()
	set, err := openWebsocketsWith(ctx, 1, "ws://"+echoHost+"/", hc, nil)
	if err != nil {
		return err
	}
	opened(time.Since(start))
	c := set.conns[0]
	defer c.CloseNow()
	for n := range 1 + rand.N(5) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rand.N(400 * time.Millisecond)):
		}
		if err := echoOnce(ctx, c, fmt.Sprintf("visit %d message %d", i, n)); err != nil {
			return err
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil && !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "already wrote close") {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
