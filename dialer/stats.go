package dialer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tokens"
)

// Stats timing, as Coder's proxy uses.
const (
	StatsFlushInterval = 30 * time.Second
	StatsFlushTimeout  = 15 * time.Second
	StatsRollupWindow  = time.Minute
	// maxStatsBacklog bounds what is kept while the primary is down; the
	// oldest reports are dropped first.
	maxStatsBacklog = 10000
)

// StatsReport is one app usage session as the primary's app-stats
// endpoint takes it.
type StatsReport = primary.StatsReport

// StatsReporter uploads reports to the primary
// (POST /api/v2/workspaceproxies/me/app-stats).
type StatsReporter interface {
	ReportAppStats(ctx context.Context, stats []StatsReport) error
}

// StatsCollectorOptions configure a StatsCollector.
type StatsCollectorOptions struct {
	// Reporter receives flushed reports; nil discards them.
	Reporter StatsReporter
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// FlushInterval is how often Run flushes; zero means
	// StatsFlushInterval.
	FlushInterval time.Duration
	// OnFlush observes each flush that had something to send: outcome
	// "ok" or "error", and the backlog left afterwards.
	OnFlush func(outcome string, sent, backlog int)
}

// StatsCollector gathers sessions, rolls short ones up and uploads them
// periodically, keeping failed uploads for the next flush.
type StatsCollector struct {
	opts StatsCollectorOptions

	flushMu sync.Mutex // serialises flushes; taken before mu
	mu      sync.Mutex
	// sessions indexes every pending session by ID so a second report of
	// the same session (a terminal closing) replaces the first.
	sessions map[uuid.UUID]*StatsReport
	groups   map[statsGroupKey][]*StatsReport
	// rolled holds each group's rolled-up report, re-sent as it grows.
	rolled  map[statsGroupKey]*rolledReport
	backlog []StatsReport
}

// rolledReport is a group's rolled-up report; changed marks one that grew
// since it was last taken for upload.
type rolledReport struct {
	StatsReport
	changed bool
}

// statsGroupKey is the roll-up key: start truncated to the window, plus
// who and what.
type statsGroupKey struct {
	start      time.Time
	user       uuid.UUID
	workspace  uuid.UUID
	agent      uuid.UUID
	method     appurl.AccessMethod
	slugOrPort string
}

// NewStatsCollector makes a collector; call Run to flush periodically.
func NewStatsCollector(o StatsCollectorOptions) *StatsCollector {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = StatsFlushInterval
	}
	return &StatsCollector{
		opts:     o,
		sessions: map[uuid.UUID]*StatsReport{},
		groups:   map[statsGroupKey][]*StatsReport{},
		rolled:   map[statsGroupKey]*rolledReport{},
	}
}

// Collect records a report; a report whose session is already pending
// replaces it.
func (c *StatsCollector) Collect(r StatsReport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.sessions[r.SessionID]; ok {
		*old = r
		return
	}
	rp := &r
	c.sessions[r.SessionID] = rp
	k := groupKey(r)
	c.groups[k] = append(c.groups[k], rp)
}

func groupKey(r StatsReport) statsGroupKey {
	return statsGroupKey{
		start:      r.SessionStartedAt.Truncate(StatsRollupWindow),
		user:       r.UserID,
		workspace:  r.WorkspaceID,
		agent:      r.AgentID,
		method:     r.AccessMethod,
		slugOrPort: r.SlugOrPort,
	}
}

// StatsSession is one session in progress.
type StatsSession struct {
	c      *StatsCollector
	report StatsReport
	once   sync.Once
}

func (c *StatsCollector) newSession(tok tokens.SignedToken) *StatsSession {
	s := &StatsSession{}
	c.begin(s, tok)
	return s
}

// begin starts s, a session not yet begun, for tok. Its ID is drawn
// when it is first collected: most sessions are HTTP requests that end
// within the roll-up window and are only ever counted in their group's
// rolled-up report.
func (c *StatsCollector) begin(s *StatsSession, tok tokens.SignedToken) {
	slug := tok.Request.AppSlugOrPort
	if tok.Request.AccessMethod == appurl.AccessMethodTerminal {
		slug = ""
	}
	s.c = c
	s.report = StatsReport{
		UserID:           tok.UserID,
		WorkspaceID:      tok.WorkspaceID,
		AgentID:          tok.AgentID,
		AccessMethod:     tok.Request.AccessMethod,
		SlugOrPort:       slug,
		SessionStartedAt: c.opts.Now(),
		Requests:         1,
	}
}

// Start begins a session that is reported once, when it ends (an HTTP
// request).
func (c *StatsCollector) Start(tok tokens.SignedToken) *StatsSession {
	return c.newSession(tok)
}

// StartOpen begins a session that is reported open right away and again
// when it ends (a terminal).
func (c *StatsCollector) StartOpen(tok tokens.SignedToken) *StatsSession {
	s := c.newSession(tok)
	s.report.SessionID = uuid.New()
	c.Collect(s.report)
	return s
}

// End closes the session; later calls do nothing. A session that was
// never collected (not reported open) and ended within the roll-up
// window goes straight into its group's rolled-up report, as the next
// roll-up would put it; any other is collected.
func (s *StatsSession) End() {
	s.once.Do(func() {
		r := s.report
		r.SessionEndedAt = s.c.opts.Now()
		if r.SessionID == uuid.Nil {
			if r.SessionEndedAt.Sub(r.SessionStartedAt) <= StatsRollupWindow {
				s.c.rollIn(r)
				return
			}
			r.SessionID = uuid.New()
		}
		s.c.Collect(r)
	})
}

// rollIn adds r, an ended short session, to its group's rolled-up report.
func (c *StatsCollector) rollIn(r StatsReport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rollInLocked(groupKey(r), r.Requests)
}

// rollInLocked adds requests to k's rolled-up report, made under a new ID
// when there is none, and marks it for the next upload.
func (c *StatsCollector) rollInLocked(k statsGroupKey, requests int) {
	acc := c.rolled[k]
	if acc == nil {
		acc = c.newRolled(k)
	}
	acc.Requests += requests
	acc.changed = true
}

func (c *StatsCollector) newRolled(k statsGroupKey) *rolledReport {
	acc := &rolledReport{StatsReport: StatsReport{
		UserID:           k.user,
		WorkspaceID:      k.workspace,
		AgentID:          k.agent,
		AccessMethod:     k.method,
		SlugOrPort:       k.slugOrPort,
		SessionID:        uuid.New(),
		SessionStartedAt: k.start,
		SessionEndedAt:   k.start.Add(StatsRollupWindow),
	}}
	c.rolled[k] = acc
	return acc
}

// rollup takes what is ready to report at now, with coderd's rules.
// Sessions that ended within the window are added to their group's
// rolled-up report (End adds most of them at once), which has an ID of
// its own (coderd's borrows its first session's; a young open session is
// never uploaded, so no ID the primary holds is lost), spans the
// truncated start plus the window, and is re-sent with its running total
// whenever it grows (the primary upserts by session ID). Sessions that
// ended after a longer time are reported as they are. Open sessions older
// than the window are reported with a provisional end of now and kept;
// younger ones wait, as they may still be rolled up, unless force is set.
func (c *StatsCollector) rollup(now time.Time, force bool) []StatsReport {
	var out []StatsReport
	for k, group := range c.groups {
		var keep []*StatsReport
		for _, r := range group {
			ended := !r.SessionEndedAt.IsZero()
			switch {
			case ended && r.SessionEndedAt.Sub(r.SessionStartedAt) <= StatsRollupWindow:
				c.rollInLocked(k, r.Requests)
				delete(c.sessions, r.SessionID)
			case !ended && !force && now.Sub(r.SessionStartedAt) <= StatsRollupWindow:
				keep = append(keep, r)
			default:
				p := *r
				if !ended {
					// A provisional end, updated later, so the primary
					// has an end time even if this process dies.
					p.SessionEndedAt = now.UTC()
					keep = append(keep, r)
				} else {
					delete(c.sessions, r.SessionID)
				}
				out = append(out, p)
			}
		}
		if len(keep) == 0 {
			delete(c.groups, k)
		} else {
			c.groups[k] = keep
		}
	}
	// Rolled-up reports stay one more window for late sessions.
	for k, acc := range c.rolled {
		if acc.changed {
			out = append(out, acc.StatsReport)
			acc.changed = false
		}
		if _, busy := c.groups[k]; !busy && acc.SessionEndedAt.Add(StatsRollupWindow).Before(now) {
			delete(c.rolled, k)
		}
	}
	return out
}

// ErrStatsUpload wraps a failed upload; the reports stay in the backlog.
var ErrStatsUpload = errors.New("upload app stats")

// Flush uploads the backlog of a failed upload, then rolls up and uploads
// what is ready, each within StatsFlushTimeout. The backlog goes in its
// own request: it may hold an older copy of a rolled-up report, and one
// upsert must not carry a session ID twice. While the backlog cannot be
// sent, new sessions wait in the collector.
func (c *StatsCollector) Flush(ctx context.Context) error {
	return c.flush(ctx, false)
}

func (c *StatsCollector) flush(ctx context.Context, force bool) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	if c.opts.Reporter == nil {
		c.mu.Lock()
		c.rollup(c.opts.Now(), force)
		c.mu.Unlock()
		return nil
	}

	c.mu.Lock()
	backlog := c.backlog
	c.mu.Unlock()
	if len(backlog) > 0 {
		if err := c.upload(ctx, backlog); err != nil {
			c.observe("error", len(backlog), len(backlog))
			return fmt.Errorf("%w: backlog of %d reports: %w", ErrStatsUpload, len(backlog), err)
		}
		c.mu.Lock()
		c.backlog = nil
		c.mu.Unlock()
		c.observe("ok", len(backlog), 0)
	}

	c.mu.Lock()
	batch := c.rollup(c.opts.Now(), force)
	c.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := c.upload(ctx, batch); err != nil {
		if len(batch) > maxStatsBacklog {
			c.opts.Logger.Warn("dialer: app stats backlog full; dropping oldest reports", "dropped", len(batch)-maxStatsBacklog)
			batch = batch[len(batch)-maxStatsBacklog:]
		}
		c.mu.Lock()
		c.backlog = batch
		c.mu.Unlock()
		c.observe("error", len(batch), len(batch))
		return fmt.Errorf("%w: %d reports kept for retry: %w", ErrStatsUpload, len(batch), err)
	}
	c.observe("ok", len(batch), 0)
	return nil
}

func (c *StatsCollector) upload(ctx context.Context, batch []StatsReport) error {
	ctx, cancel := context.WithTimeout(ctx, StatsFlushTimeout)
	defer cancel()
	return c.opts.Reporter.ReportAppStats(ctx, batch)
}

func (c *StatsCollector) observe(outcome string, sent, backlog int) {
	if c.opts.OnFlush != nil {
		c.opts.OnFlush(outcome, sent, backlog)
	}
}

// Backlog is the number of reports waiting after failed uploads.
func (c *StatsCollector) Backlog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.backlog)
}

// Run flushes every FlushInterval until ctx ends, then flushes
// everything once more (open sessions included) with a fresh timeout.
func (c *StatsCollector) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := c.flush(context.WithoutCancel(ctx), true); err != nil {
				c.opts.Logger.Warn("dialer: final app stats flush failed", "error", err)
			}
			return
		case <-t.C:
			if err := c.Flush(ctx); err != nil {
				c.opts.Logger.Warn("dialer: app stats flush failed", "error", err)
			}
		}
	}
}

// pending lists what is not yet taken for upload, for tests: the
// collected sessions and the rolled-up reports that grew.
func (c *StatsCollector) pending() []StatsReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]StatsReport, 0, len(c.sessions))
	for _, r := range c.sessions {
		out = append(out, *r)
	}
	for _, acc := range c.rolled {
		if acc.changed {
			out = append(out, acc.StatsReport)
		}
	}
	return out
}
