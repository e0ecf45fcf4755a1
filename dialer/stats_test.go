package dialer

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func appToken(slug string) tokens.SignedToken {
	return tokens.SignedToken{Request: subdomainAppRequest(slug), UserID: testUserID, WorkspaceID: testWorkspaceID, AgentID: testAgentID}
}

func TestStatsRollup(t *testing.T) {
	clk := &fakeClock{t: at(10 * time.Second)}
	rep := &recordingReporter{}
	c := NewStatsCollector(StatsCollectorOptions{Reporter: rep, Now: clk.Now})

	// Three short requests to one app within the minute, one to another.
	for i, d := range []time.Duration{10, 20, 40} {
		clk.set(at(d * time.Second))
		s := c.Start(appToken("code"))
		clk.set(at(d*time.Second + time.Duration(i+1)*time.Second))
		s.End()
	}
	clk.set(at(50 * time.Second))
	s := c.Start(appToken("8080"))
	s.End()
	s.End() // idempotent
	// A long request (65 s) is reported on its own.
	clk.set(at(5 * time.Second))
	long := c.Start(appToken("code"))
	clk.set(at(70 * time.Second))
	long.End()

	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := rep.all()
	sort.Slice(got, func(i, j int) bool {
		if got[i].SlugOrPort != got[j].SlugOrPort {
			return got[i].SlugOrPort < got[j].SlugOrPort
		}
		return got[i].Requests < got[j].Requests
	})
	if len(got) != 3 {
		t.Fatalf("got %d reports: %+v", len(got), got)
	}
	if r := got[0]; r.SlugOrPort != "8080" || r.Requests != 1 || !r.SessionStartedAt.Equal(t0) {
		t.Errorf("8080: %+v", r)
	}
	if r := got[1]; r.SlugOrPort != "code" || r.Requests != 1 || !r.SessionStartedAt.Equal(at(5*time.Second)) || !r.SessionEndedAt.Equal(at(70*time.Second)) {
		t.Errorf("long: %+v", r)
	}
	// The rolled-up report spans the truncated minute, under an ID of its
	// own; every report has a different ID.
	firstID := got[2].SessionID
	if r := got[2]; r.SlugOrPort != "code" || r.Requests != 3 || !r.SessionStartedAt.Equal(t0) || !r.SessionEndedAt.Equal(at(time.Minute)) ||
		r.SessionID == uuid.Nil || r.UserID != testUserID || r.WorkspaceID != testWorkspaceID || r.AgentID != testAgentID || r.AccessMethod != "subdomain" {
		t.Errorf("rolled up: %+v", r)
	}
	if got[0].SessionID == uuid.Nil || got[1].SessionID == uuid.Nil || got[0].SessionID == got[1].SessionID || got[0].SessionID == firstID || got[1].SessionID == firstID {
		t.Errorf("session IDs: %v %v %v", got[0].SessionID, got[1].SessionID, firstID)
	}
	if len(c.pending()) != 0 {
		t.Fatalf("pending after flush: %+v", c.pending())
	}
	// Nothing new: nothing sent.
	if err := c.Flush(context.Background()); err != nil || len(rep.batches) != 1 {
		t.Fatalf("empty flush sent %d batches (%v)", len(rep.batches), err)
	}
	// A late request in the same minute re-sends the rolled-up report
	// with its running total under the same ID.
	clk.set(at(55 * time.Second))
	c.Start(appToken("code")).End()
	clk.set(at(80 * time.Second))
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := rep.batches[len(rep.batches)-1]
	if len(last) != 1 || last[0].SessionID != firstID || last[0].Requests != 4 {
		t.Fatalf("running total: %+v", last)
	}
	// The group is forgotten one window after it ended.
	clk.set(at(3 * time.Minute))
	_ = c.Flush(context.Background())
	c.mu.Lock()
	n := len(c.rolled)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d rolled-up groups kept", n)
	}
}

func TestStatsOpenSession(t *testing.T) {
	clk := &fakeClock{t: t0}
	rep := &recordingReporter{}
	c := NewStatsCollector(StatsCollectorOptions{Reporter: rep, Now: clk.Now})
	term := c.StartOpen(tokens.SignedToken{Request: terminalRequest(testAgentID), UserID: testUserID, WorkspaceID: testWorkspaceID, AgentID: testAgentID})

	// Young open sessions wait: they may still be rolled up.
	clk.set(at(30 * time.Second))
	_ = c.Flush(context.Background())
	if n := len(rep.all()); n != 0 {
		t.Fatalf("young open session reported: %d", n)
	}
	// Older ones are reported with a provisional end, and kept.
	clk.set(at(90 * time.Second))
	_ = c.Flush(context.Background())
	got := rep.all()
	if len(got) != 1 || !got[0].SessionEndedAt.Equal(at(90*time.Second)) || got[0].SlugOrPort != "" || got[0].AccessMethod != "terminal" {
		t.Fatalf("provisional: %+v", got)
	}
	id := got[0].SessionID
	clk.set(at(300 * time.Second))
	term.End()
	_ = c.Flush(context.Background())
	got = rep.all()
	if len(got) != 2 || got[1].SessionID != id || !got[1].SessionEndedAt.Equal(at(300*time.Second)) || !got[1].SessionStartedAt.Equal(t0) {
		t.Fatalf("final: %+v", got)
	}
}

// A terminal that closes within the window, never uploaded while open
// (young open sessions wait), is rolled up with the requests of its group
// that ended meanwhile.
func TestStatsShortOpenSessionRollsUp(t *testing.T) {
	clk := &fakeClock{t: at(10 * time.Second)}
	rep := &recordingReporter{}
	c := NewStatsCollector(StatsCollectorOptions{Reporter: rep, Now: clk.Now})
	tok := tokens.SignedToken{Request: terminalRequest(testAgentID), UserID: testUserID, WorkspaceID: testWorkspaceID, AgentID: testAgentID}
	term := c.StartOpen(tok)
	id := term.report.SessionID
	clk.set(at(20 * time.Second))
	term.End()
	c.Start(tok).End()
	clk.set(at(30 * time.Second))
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := rep.all()
	if len(got) != 1 || got[0].SessionID == uuid.Nil || got[0].Requests != 2 || !got[0].SessionStartedAt.Equal(t0) ||
		!got[0].SessionEndedAt.Equal(at(time.Minute)) || got[0].AccessMethod != "terminal" || got[0].SlugOrPort != "" {
		t.Fatalf("reports %+v (open session %v)", got, id)
	}
}

func TestStatsBacklog(t *testing.T) {
	clk := &fakeClock{t: t0}
	rep := &recordingReporter{fail: true}
	var outcomes []string
	c := NewStatsCollector(StatsCollectorOptions{Reporter: rep, Now: clk.Now, OnFlush: func(o string, _, _ int) { outcomes = append(outcomes, o) }})
	c.Start(appToken("a")).End()
	err := c.Flush(context.Background())
	if !errors.Is(err, ErrStatsUpload) || c.Backlog() != 1 {
		t.Fatalf("failed flush: err %v backlog %d", err, c.Backlog())
	}
	// While the backlog cannot be sent, new sessions wait in the collector.
	clk.set(at(2 * time.Minute))
	c.Start(appToken("b")).End()
	if err := c.Flush(context.Background()); !errors.Is(err, ErrStatsUpload) || c.Backlog() != 1 || len(c.pending()) != 1 {
		t.Fatalf("second failed flush: err %v backlog %d pending %d", err, c.Backlog(), len(c.pending()))
	}
	rep.mu.Lock()
	rep.fail = false
	rep.mu.Unlock()
	clk.set(at(4 * time.Minute))
	c.Start(appToken("c")).End()
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The backlog goes first, in its own request.
	if len(rep.batches) != 2 || len(rep.batches[0]) != 1 || rep.batches[0][0].SlugOrPort != "a" || len(rep.batches[1]) != 2 || c.Backlog() != 0 {
		t.Fatalf("batches %+v backlog %d", rep.batches, c.Backlog())
	}
	slugs := map[string]bool{}
	for _, r := range rep.batches[1] {
		slugs[r.SlugOrPort] = true
	}
	if !slugs["b"] || !slugs["c"] {
		t.Fatalf("second batch %+v", rep.batches[1])
	}
	if want := "error error ok ok"; strings.Join(outcomes, " ") != want {
		t.Fatalf("outcomes %v, want %s", outcomes, want)
	}
}

// slowReporter blocks until its context ends.
type slowReporter struct{ deadline time.Duration }

func (s *slowReporter) ReportAppStats(ctx context.Context, _ []StatsReport) error {
	dl, ok := ctx.Deadline()
	if ok {
		s.deadline = time.Until(dl)
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestStatsFlushTimeout(t *testing.T) {
	rep := &slowReporter{}
	c := NewStatsCollector(StatsCollectorOptions{Reporter: rep})
	c.Start(appToken("a")).End()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) || c.Backlog() != 1 {
		t.Fatalf("err %v backlog %d", err, c.Backlog())
	}
	if rep.deadline <= 0 || rep.deadline > 50*time.Millisecond {
		t.Fatalf("reporter deadline %v", rep.deadline)
	}
	if StatsFlushTimeout != 15*time.Second || StatsFlushInterval != 30*time.Second || StatsRollupWindow != time.Minute {
		t.Fatal("stats timings differ from Coder's")
	}
}

func TestStatsRunFlushesAndStops(t *testing.T) {
	rep := &recordingReporter{}
	c := NewStatsCollector(StatsCollectorOptions{Reporter: rep, FlushInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	c.Start(appToken("a")).End()
	deadline := time.Now().Add(5 * time.Second)
	for len(rep.all()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run never flushed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// An open session is flushed on the way out.
	c.StartOpen(appToken("b"))
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	got := rep.all()
	if last := got[len(got)-1]; last.SlugOrPort != "b" || last.SessionEndedAt.IsZero() {
		t.Fatalf("final flush: %+v", got)
	}
}

func TestStatsReportJSON(t *testing.T) {
	id := uuid.MustParse("11111111-2222-3333-4444-555555555555")
	b, err := json.Marshal(StatsReport{
		UserID: testUserID, WorkspaceID: testWorkspaceID, AgentID: testAgentID,
		AccessMethod: "path", SlugOrPort: "code", SessionID: id,
		SessionStartedAt: t0, Requests: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"user_id":"0b1e4a2c-3b5d-4c6e-8f70-112233445566","workspace_id":"aa1e4a2c-3b5d-4c6e-8f70-112233445566","agent_id":"123e4567-e89b-12d3-a456-426614174000","access_method":"path","slug_or_port":"code","session_id":"11111111-2222-3333-4444-555555555555","session_started_at":"2026-11-22T10:00:00Z","session_ended_at":"0001-01-01T00:00:00Z","requests":2}`
	if string(b) != want {
		t.Fatalf("\n got %s\nwant %s", b, want)
	}
}

func TestProxiedRequestsAreCounted(t *testing.T) {
	e := newEnv(t, nil).start()
	addr, heads := rawApp(t)
	e.agents.set(8080, addr)
	tok := e.token(pathAppRequest("code"), "http://127.0.0.1:8080")
	for i := 0; i < 3; i++ {
		resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", tok, nil)
		resp.Body.Close()
		<-heads
	}
	// A refused request is not a session.
	resp := e.do("GET", "http://"+testAccessHost+"/@alice/dev.main/apps/code/", "", nil)
	resp.Body.Close()
	if err := e.srv.Stats().Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := e.stats.all()
	if len(got) != 1 || got[0].Requests != 3 || got[0].AccessMethod != "path" || got[0].SlugOrPort != "code" || got[0].AgentID != testAgentID {
		t.Fatalf("reports %+v", got)
	}
}
