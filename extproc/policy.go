package extproc

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
)

// AppInfo is what authz told Envoy about the app of an allowed request
// (its dynamic metadata). Known is false when the metadata is absent.
type AppInfo struct {
	Known        bool
	AccessMethod appurl.AccessMethod
	// CORSBehavior is "simple" or "passthru"; authz sends "simple" when
	// the token has none.
	CORSBehavior string
	// Owner is the workspace owner (the token's user_id); uuid.Nil when
	// absent or malformed, which never matches an origin.
	Owner uuid.UUID
}

// passthru reports whether the app leaves CORS to itself. Only subdomain
// apps can: path apps always get Coder's CORS stripping.
func (a AppInfo) passthru() bool {
	return a.Known && a.AccessMethod == appurl.AccessMethodSubdomain && a.CORSBehavior == corsBehaviorPassthru
}

// simpleSubdomain reports whether wsedge runs CORS for the app.
func (a AppInfo) simpleSubdomain() bool {
	return a.Known && a.AccessMethod == appurl.AccessMethodSubdomain && a.CORSBehavior != corsBehaviorPassthru
}

// Exchange is one request as the processor sees it: the request line and
// headers it needs and the app authz allowed it for. It is filled by the
// request-headers message and read again for the response.
type Exchange struct {
	Method string
	Host   string
	// Origin, ReqMethod and ReqHeaders are the request's Origin,
	// Access-Control-Request-Method and Access-Control-Request-Headers.
	Origin     string
	ReqMethod  string
	ReqHeaders string
	App        AppInfo
}

// Preflight reports whether the exchange is a CORS preflight: OPTIONS with
// Access-Control-Request-Method, all go-chi/cors (coderd's CORS handler)
// asks; one without Origin is answered but never allowed.
func (e *Exchange) Preflight() bool {
	return e.Method == http.MethodOptions && e.ReqMethod != ""
}

// Outcome labels, bounded, for metrics and logs.
const (
	outcomeContinue          = "continue"
	outcomePreflightAllowed  = "preflight_allowed"
	outcomePreflightRefused  = "preflight_refused"
	outcomePreflightToApp    = "preflight_to_app"
	outcomePreflightToAuthz  = "preflight_to_authz"
	outcomeCORSAllowed       = "cors_allowed"
	outcomeCORSNotAllowed    = "cors_not_allowed"
	outcomeStripped          = "stripped"
	outcomePassthru          = "passthru"
	outcomeNoMetadata        = "no_metadata"
	outcomeBadMessage        = "bad_message"
	outcomeOwnerLookupFailed = "owner_lookup_failed"
	outcomeLocalReply        = "local_reply"
)

// Immediate is a response the processor sends in place of the upstream's.
type Immediate struct {
	Status  int
	Header  http.Header
	Details string // Envoy's response code details, for the access log
}

// HeaderOp is one change to a header map. Envoy applies every removal of a
// mutation before its sets, so removing a header and adding back the values
// to keep rewrites it.
type HeaderOp struct {
	Key    string
	Value  string
	Append bool // add another line instead of replacing
}

// Mutation is a set of header changes.
type Mutation struct {
	Remove []string
	Set    []HeaderOp
}

// Apply makes the changes to h as Envoy does: every removal, then the
// sets in order (a set replaces, an append adds a line).
func (m Mutation) Apply(h http.Header) {
	for _, k := range m.Remove {
		h.Del(k)
	}
	for _, op := range m.Set {
		if op.Append {
			h.Add(op.Key, op.Value)
		} else {
			h.Set(op.Key, op.Value)
		}
	}
}

func (m *Mutation) empty() bool { return len(m.Remove) == 0 && len(m.Set) == 0 }

func (m *Mutation) set(key, value string) {
	m.Set = append(m.Set, HeaderOp{Key: key, Value: value})
}

func (m *Mutation) add(key, value string) {
	m.Set = append(m.Set, HeaderOp{Key: key, Value: value, Append: true})
}

// RequestDecision is the answer to a request-headers message: continue
// (Immediate nil) or answer the client directly.
type RequestDecision struct {
	Immediate *Immediate
	Outcome   string
}

// ResponseDecision is the answer to a response-headers message.
type ResponseDecision struct {
	Mutation Mutation
	// CoderCookiesRemoved counts Set-Cookie lines dropped.
	CoderCookiesRemoved int
	Outcome             string
}

// OwnerResolver finds the owner of a subdomain app (the primary's
// resolve-app-owner, behind a cache).
type OwnerResolver interface {
	Owner(ctx context.Context, req appurl.Request) (uuid.UUID, error)
}

// policy holds what the decisions depend on.
type policy struct {
	wildcard *appurl.HostnamePattern // nil: no subdomain apps
	owners   OwnerResolver
	// lookupTimeout bounds one owner lookup; 0 means no bound of its own.
	lookupTimeout time.Duration
	// ownHost, when set, replaces the lookup: only an origin on this
	// host is allowed, the request's own, whose app's owner is the
	// token's (the dialer matched the token to the host).
	ownHost string
}

// owner resolves one app's owner within the lookup timeout.
func (p *policy) owner(ctx context.Context, req appurl.Request) (uuid.UUID, error) {
	if p.lookupTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.lookupTimeout)
		defer cancel()
	}
	return p.owners.Owner(ctx, req)
}

// originAllowed reports whether origin is a subdomain app on this proxy
// owned by owner. Any failure (not an app, unknown app, primary
// unreachable) refuses the origin, as coderd does.
func (p *policy) originAllowed(ctx context.Context, origin string, owner uuid.UUID) (allowed bool, lookupFailed bool) {
	if owner == uuid.Nil {
		return false, false
	}
	if p.ownHost != "" {
		return ownOrigin(origin, p.ownHost), false
	}
	req, ok := originApp(p.wildcard, origin)
	if !ok {
		return false, false
	}
	got, err := p.owner(ctx, req)
	if err != nil {
		return false, true
	}
	return got == owner, false
}

// afterAuthzRequest decides a request that ext_authz allowed. Only a
// preflight to a simple-mode subdomain app is answered here, as coderd's
// CORS handler answers it; everything else goes on to the app.
func (p *policy) afterAuthzRequest(ctx context.Context, e *Exchange) RequestDecision {
	if !e.Preflight() || !e.App.simpleSubdomain() {
		if e.Preflight() && e.App.passthru() {
			return RequestDecision{Outcome: outcomePreflightToApp}
		}
		return RequestDecision{Outcome: outcomeContinue}
	}
	allowed, failed := false, false
	if e.Origin != "" && methodAllowed(e.ReqMethod) {
		allowed, failed = p.originAllowed(ctx, e.Origin, e.App.Owner)
	}
	d := RequestDecision{Immediate: &Immediate{
		Status:  http.StatusOK,
		Header:  preflightHeaders(allowed, e.Origin, e.ReqMethod, e.ReqHeaders),
		Details: "wsedge_cors_preflight",
	}}
	switch {
	case allowed:
		d.Outcome = outcomePreflightAllowed
	case failed:
		d.Outcome = outcomeOwnerLookupFailed
	default:
		d.Outcome = outcomePreflightRefused
	}
	return d
}

// response decides the headers of an app's response.
func (p *policy) response(ctx context.Context, e *Exchange, h http.Header) ResponseDecision {
	var d ResponseDecision
	m := &d.Mutation

	// Coder cookies never come from an app, whatever its CORS behaviour.
	if lines := h.Values(hdrSetCookie); len(lines) > 0 {
		kept, removed := filterSetCookies(lines)
		if removed > 0 {
			d.CoderCookiesRemoved = removed
			m.Remove = append(m.Remove, hdrSetCookie)
			for _, l := range kept {
				m.add(hdrSetCookie, l)
			}
		}
	}

	switch {
	case !e.App.Known:
		d.Outcome = outcomeNoMetadata
	case e.App.passthru():
		d.Outcome = outcomePassthru
		return d
	default:
		d.Outcome = outcomeStripped
	}

	// Unless passthru: the app's own CORS headers and CORS Vary values go.
	for _, k := range appCORSHeaders {
		if h.Get(k) != "" {
			m.Remove = append(m.Remove, k)
		}
	}
	// coderd's CORS middleware (go-chi/cors: the app CORS of simple-mode
	// subdomain apps, the dashboard CORS of path apps) adds Vary: Origin to
	// every response it handles, ahead of the app's own values.
	kept, _ := cleanVary(h.Values(hdrVary))
	m.Remove = append(m.Remove, hdrVary)
	m.add(hdrVary, hdrOrigin)
	for _, v := range kept {
		m.add(hdrVary, v)
	}

	if e.App.simpleSubdomain() {
		if e.Origin != "" && methodAllowed(e.Method) {
			allowed, failed := p.originAllowed(ctx, e.Origin, e.App.Owner)
			switch {
			case allowed:
				m.set(hdrACAO, e.Origin)
				m.set(hdrACAC, "true")
				d.Outcome = outcomeCORSAllowed
			case failed:
				d.Outcome = outcomeOwnerLookupFailed
			default:
				d.Outcome = outcomeCORSNotAllowed
			}
		}
		return d
	}

	// Coder's proxy sends nosniff on everything but subdomain-app
	// responses; without metadata the safe answer is to send it.
	if h.Get(hdrContentTypeOpts) != "nosniff" || len(h.Values(hdrContentTypeOpts)) != 1 {
		m.set(hdrContentTypeOpts, "nosniff")
	}
	return d
}

// ApplyResponsePolicy applies the app response policy to the headers h of
// an app's response, in place, and returns what it did. It is the policy
// the processor applies (the same code): Coder Set-Cookie lines dropped,
// the app's CORS headers and CORS Vary values removed and Vary: Origin
// added unless passthru, nosniff except on subdomain apps. It makes no
// owner lookup: a simple-mode app's response allows an Origin only when it
// names the request's own host (e.Host), whose app's owner is the token's
// user; Envoy runs the processor for every other Origin, and the
// processor, applying the same policy to this one's result, decides those
// with the lookup (applying the policy twice is applying it once). With
// Envoy's fast path the dialer applies this to every app response.
func ApplyResponsePolicy(e *Exchange, h http.Header) ResponseDecision {
	p := policy{ownHost: e.Host}
	d := p.response(context.Background(), e, h)
	d.Mutation.Apply(h)
	return d
}

// ownOrigin reports whether origin names host: the same host and port,
// whatever the scheme, as originApp reads an origin.
func ownOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && host != "" && strings.EqualFold(u.Host, host)
}

// TokenAppInfo is what a verified token says about its app, as authz's
// metadata would say it.
func TokenAppInfo(method appurl.AccessMethod, corsBehavior string, owner uuid.UUID) AppInfo {
	if corsBehavior == "" {
		corsBehavior = corsBehaviorSimple
	}
	return AppInfo{Known: method != "", AccessMethod: method, CORSBehavior: corsBehavior, Owner: owner}
}
