package dialer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/wsedge/wsedge/coderhttp"
)

// Limits bound the work the dialer takes on at once. A request counts
// from the moment its app token is verified until the agent answers with
// response headers (a websocket: until it is upgraded; a terminal: until
// the agent's PTY port is dialled), because that is where a burst piles
// up — in dials and in apps slow to answer. Held websockets and streaming
// bodies are bounded by Envoy's connection limits instead. What does not
// fit is answered at once with 503 and Retry-After.
type Limits struct {
	// Requests bounds such requests in total; 0 means DefaultMaxRequests.
	Requests int
	// RequestsPerAgent bounds them per workspace agent, so one busy
	// workspace cannot take every slot; 0 means
	// DefaultMaxRequestsPerAgent.
	RequestsPerAgent int
	// Dials bounds concurrent tailnet dials to agents; 0 means
	// DefaultMaxDials.
	Dials int
}

// Defaults sized for a small deployment (tens of workspaces, a few
// hundred users on one dialer replica).
const (
	DefaultMaxRequests         = 512
	DefaultMaxRequestsPerAgent = 64
	DefaultMaxDials            = 64
)

// RetryAfterSeconds is the Retry-After of the dialer's 503s.
const RetryAfterSeconds = 1

// errDialsBusy fails a dial that found every dial slot taken.
var errDialsBusy = errors.New("dialer: too many agent dials in flight")

func (l Limits) withDefaults() (Limits, error) {
	if l.Requests < 0 || l.RequestsPerAgent < 0 || l.Dials < 0 {
		return l, fmt.Errorf("%w: negative limit", ErrInvalidOptions)
	}
	if l.Requests == 0 {
		l.Requests = DefaultMaxRequests
	}
	if l.RequestsPerAgent == 0 {
		l.RequestsPerAgent = DefaultMaxRequestsPerAgent
	}
	if l.Dials == 0 {
		l.Dials = DefaultMaxDials
	}
	return l, nil
}

// admission counts in-flight requests in total and per agent.
type admission struct {
	limits Limits

	mu       sync.Mutex // guards the following
	total    int
	perAgent map[uuid.UUID]int
}

func newAdmission(l Limits) *admission {
	return &admission{limits: l, perAgent: map[uuid.UUID]int{}}
}

// inFlight is the number of admitted requests.
func (a *admission) inFlight() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return float64(a.total)
}

// reserve is the share of a limit kept for requests authz authorized
// (Limits): an eighth, none below eight.
func reserve(limit int) int { return limit / 8 }

// take takes a slot for a request to agent; reason names the limit that
// refused it ("" when taken). put gives it back. A request authz did not
// authorize (a warm token cookie) may not take the reserve.
func (a *admission) take(agent uuid.UUID, byAuthz bool) (reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	total, perAgent := a.limits.Requests, a.limits.RequestsPerAgent
	if !byAuthz {
		total -= reserve(total)
		perAgent -= reserve(perAgent)
	}
	if a.total >= total {
		return "requests"
	}
	if a.perAgent[agent] >= perAgent {
		return "agent_requests"
	}
	a.total++
	a.perAgent[agent]++
	return ""
}

func (a *admission) put(agent uuid.UUID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perAgent[agent]--; a.perAgent[agent] <= 0 {
		delete(a.perAgent, agent)
	}
}

// admit takes a slot for a request to agent that authz authorized (a
// terminal); reason names the limit that refused it. release is safe to
// call more than once.
func (a *admission) admit(agent uuid.UUID) (release func(), reason string) {
	slot := &admissionSlot{}
	if reason := slot.take(a, agent, true); reason != "" {
		return nil, reason
	}
	return slot.release, ""
}

// admissionSlot is one taken slot; release is safe to call more than
// once, from any goroutine.
type admissionSlot struct {
	a        *admission
	agent    uuid.UUID
	released atomic.Bool
}

func (s *admissionSlot) take(a *admission, agent uuid.UUID, byAuthz bool) (reason string) {
	if reason := a.take(agent, byAuthz); reason != "" {
		return reason
	}
	s.a, s.agent = a, agent
	return ""
}

func (s *admissionSlot) release() {
	if s.released.CompareAndSwap(false, true) {
		s.a.put(s.agent)
	}
}

// limitedDialer bounds concurrent dials through an AgentDialer; a dial
// that finds no free slot fails at once with errDialsBusy.
type limitedDialer struct {
	AgentDialer
	slots chan struct{}
}

func (d limitedDialer) DialAgent(ctx context.Context, agentID uuid.UUID, port uint16) (net.Conn, error) {
	select {
	case d.slots <- struct{}{}:
	default:
		return nil, errDialsBusy
	}
	defer func() { <-d.slots }()
	return d.AgentDialer.DialAgent(ctx, agentID, port)
}

// admitRequest takes a slot for a request to agent or answers 503; the
// caller calls release once the agent has answered.
func (s *Server) admitRequest(w http.ResponseWriter, r *http.Request, agent uuid.UUID) (release func(), ok bool) {
	release, reason := s.admission.admit(agent)
	if release == nil {
		s.unavailable(w, r, reason)
		return nil, false
	}
	return release, true
}

// admitInto is admitRequest into a slot the caller holds; byAuthz says
// whether authz authorized the request (else it may not take the reserve).
func (s *Server) admitInto(w http.ResponseWriter, r *http.Request, slot *admissionSlot, agent uuid.UUID, byAuthz bool) bool {
	if reason := slot.take(s.admission, agent, byAuthz); reason != "" {
		s.unavailable(w, r, reason)
		return false
	}
	return true
}

// unavailable answers work the dialer sheds: 503 with Retry-After, a
// page for browsers, coderd's JSON shape otherwise.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, reason string) {
	s.metrics.shed.WithLabelValues(reason).Inc()
	s.log.Debug("dialer: request shed", "limit", reason, "request_id", requestID(r.Context()))
	const detail = "The workspace proxy is handling too many requests right now. Try again shortly."
	w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	if !wantsHTML(r) {
		coderhttp.WriteJSON(w, http.StatusServiceUnavailable, coderhttp.Response{Message: "Service Unavailable", Detail: detail})
		return
	}
	s.writePage(w, coderhttp.Page{Status: http.StatusServiceUnavailable, Title: "Service Unavailable", Description: detail, Retry: true})
}

// wantsHTML: browsers navigating (and clients that say nothing) get the
// page, API clients the JSON.
func wantsHTML(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	return accept == "" || strings.Contains(accept, "text/html") || strings.Contains(accept, "*/*")
}

// releaseOnHeaders calls release when the response headers go out (or
// the connection is hijacked for a websocket), keeping flushing and
// hijacking working.
type releaseOnHeaders struct {
	http.ResponseWriter
	slot *admissionSlot
}

func (w *releaseOnHeaders) release() { w.slot.release() }

func (w *releaseOnHeaders) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.release()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *releaseOnHeaders) Write(b []byte) (int, error) {
	w.release()
	return w.ResponseWriter.Write(b)
}

func (w *releaseOnHeaders) Flush() {
	w.release()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *releaseOnHeaders) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.release()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *releaseOnHeaders) Unwrap() http.ResponseWriter { return w.ResponseWriter }
