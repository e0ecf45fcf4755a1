package extproc

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/wsedge/wsedge/appurl"
)

// A CORS preflight never carries cookies, so ext_authz (which needs the
// session or token cookie) would send it to the login flow, and coderd,
// which runs its app CORS handler only after resolving a token, does just
// that: a preflight to a private subdomain app fails. wsedge answers such a
// preflight before ext_authz when it can do so safely:
//
//   - the target host and the Origin are both subdomain apps on this
//     proxy's wildcard, the requested method is one coderd allows (docs/protocol.md#cors), and
//   - resolve-app-owner says both apps have the same owner, and
//   - the app is not known to be passthru (see behaviorMemory).
//
// The answer is go-chi/cors's allowed preflight (no app, no login, no
// token involved), so it discloses nothing of the app: only that the two
// apps share an owner, which the origin app's owner knows. Everything else
// (another owner, another site, a lookup failure, a passthru app) goes on
// through ext_authz exactly as in coderd, and after it the second
// processor applies the app's real behaviour. A failure of this processor
// fails the request (failure_mode_allow is false).
//
// The target's CORS behaviour is a template setting that only a token
// reveals. Until this process has seen a token for the app, the default,
// "simple", is assumed; a passthru app whose same-owner preflight is
// answered here still decides whether the browser may read its responses,
// since in passthru mode its own CORS headers reach the browser untouched.

// beforeAuthzRequest decides a preflight before ext_authz.
func (p *policy) beforeAuthzRequest(ctx context.Context, e *Exchange, mem *behaviorMemory) RequestDecision {
	if !e.Preflight() || p.wildcard == nil || e.Origin == "" || !methodAllowed(e.ReqMethod) {
		return RequestDecision{Outcome: outcomePreflightToAuthz}
	}
	target, ok := hostApp(p.wildcard, e.Host)
	if !ok {
		return RequestDecision{Outcome: outcomePreflightToAuthz}
	}
	origin, ok := originApp(p.wildcard, e.Origin)
	if !ok {
		return RequestDecision{Outcome: outcomePreflightToAuthz}
	}
	if mem.passthru(target) {
		return RequestDecision{Outcome: outcomePreflightToAuthz}
	}
	// Both lookups at once: a cold cache costs one primary round trip.
	var targetOwner, originOwner uuid.UUID
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { targetOwner, err = p.owner(gctx, target); return err })
	g.Go(func() (err error) { originOwner, err = p.owner(gctx, origin); return err })
	if err := g.Wait(); err != nil {
		return RequestDecision{Outcome: outcomeOwnerLookupFailed}
	}
	if targetOwner == uuid.Nil || targetOwner != originOwner {
		return RequestDecision{Outcome: outcomePreflightToAuthz}
	}
	return RequestDecision{
		Immediate: &Immediate{
			Status:  http.StatusOK,
			Header:  preflightHeaders(true, e.Origin, e.ReqMethod, e.ReqHeaders),
			Details: "wsedge_cors_preflight",
		},
		Outcome: outcomePreflightAllowed,
	}
}

// behaviorMemory remembers which subdomain apps authz reported as
// passthru, so their preflights go through ext_authz to the app (as in
// coderd) instead of being answered before it. Entries expire so that a
// template switched back to simple is noticed; the size is bounded.
type behaviorMemory struct {
	mu      sync.Mutex
	now     func() time.Time
	ttl     time.Duration
	max     int
	entries map[appKey]time.Time // app → expiry
}

// appKey identifies a subdomain app by the parts of its hostname.
type appKey struct {
	prefix, slug, agent, workspace, user string
}

func keyOf(r appurl.Request) appKey {
	return appKey{r.Prefix, r.AppSlugOrPort, r.AgentNameOrID, r.WorkspaceNameOrID, r.UsernameOrID}
}

func newBehaviorMemory(now func() time.Time, ttl time.Duration, max int) *behaviorMemory {
	return &behaviorMemory{now: now, ttl: ttl, max: max, entries: map[appKey]time.Time{}}
}

// record notes the behaviour authz reported for the app at host.
func (m *behaviorMemory) record(app appurl.Request, passthru bool) {
	k := keyOf(app)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !passthru {
		delete(m.entries, k)
		return
	}
	if _, ok := m.entries[k]; !ok && len(m.entries) >= m.max {
		m.evictLocked(now)
	}
	m.entries[k] = now.Add(m.ttl)
}

// evictLocked drops expired entries, or, if none expired, the one closest
// to expiry.
func (m *behaviorMemory) evictLocked(now time.Time) {
	var oldest appKey
	var oldestExp time.Time
	for k, exp := range m.entries {
		if !exp.After(now) {
			delete(m.entries, k)
			continue
		}
		if oldestExp.IsZero() || exp.Before(oldestExp) {
			oldest, oldestExp = k, exp
		}
	}
	if len(m.entries) >= m.max {
		delete(m.entries, oldest)
	}
}

func (m *behaviorMemory) passthru(app appurl.Request) bool {
	k := keyOf(app)
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.entries[k]
	if !ok {
		return false
	}
	if !exp.After(m.now()) {
		delete(m.entries, k)
		return false
	}
	return true
}

func (m *behaviorMemory) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}
