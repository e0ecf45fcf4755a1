package dialer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/extproc"
	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tokens"
)

// minimumAppPort: Coder reserves agent ports below 9 (SSH, PTY, speedtest,
// agent API) for itself.
const minimumAppPort = 9

// nonCanonicalHeaders pairs Go's canonical spelling of the websocket
// headers with RFC 6455's; some apps compare header names byte for byte.
var nonCanonicalHeaders = []struct{ canonical, rfc string }{
	{"Sec-Websocket-Accept", "Sec-WebSocket-Accept"},
	{"Sec-Websocket-Extensions", "Sec-WebSocket-Extensions"},
	{"Sec-Websocket-Key", "Sec-WebSocket-Key"},
	{"Sec-Websocket-Protocol", "Sec-WebSocket-Protocol"},
	{"Sec-Websocket-Version", "Sec-WebSocket-Version"},
}

// envoyClientHeaders are what Envoy tells its upstream about the client
// (use_remote_address): facts for the edge's own decisions, which Coder's
// proxy never sends an app.
var envoyClientHeaders = []string{"X-Envoy-External-Address", "X-Envoy-Internal"}

// visitorIdentityHeaders are the headers newer Coder releases declare as
// injected by the workspace app proxy to tell an app who is visiting
// (codersdk VisitorUserIDHeader, VisitorUsernameHeader,
// VisitorUserEmailHeader; coderd's proxy strips client-sent copies). An
// app written for them trusts them, so a copy the client sent must never
// reach it: wsedge removes them always and injects none.
var visitorIdentityHeaders = []string{"X-Coder-User-Id", "X-Coder-Username", "X-Coder-User-Email"}

// protectedHeaderPrefixes and protectedHeaders name the headers whose
// value the proxy chain vouches for (Envoy or the dialer sets them, or
// removes client copies). Their underscore spellings are dropped too:
// Envoy's edge config drops underscore headers, but the dialer must not
// rely on the edge for it — servers that fold '_' into '-' (uWSGI; Puma
// before 6.4.3/5.6.9, CVE-2024-45614) read X_Forwarded_For as
// X-Forwarded-For. Lower case, dashes.
var (
	protectedHeaderPrefixes = []string{"x-wsedge-", "x-forwarded-", "x-envoy-", "x-coder-user-"}
	protectedHeaders        = []string{"x-coder-username", "x-real-ip", "forwarded", "x-request-id"}
)

// isUnderscoreSpelling reports whether name is a protected header spelt
// with at least one underscore, compared with '_' folded to '-' and case
// ignored.
func isUnderscoreSpelling(name string) bool {
	if !strings.Contains(name, "_") {
		return false
	}
	folded := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	for _, p := range protectedHeaderPrefixes {
		if strings.HasPrefix(folded, p) {
			return true
		}
	}
	for _, h := range protectedHeaders {
		if folded == h {
			return true
		}
	}
	return false
}

// appExchange is what serveApp keeps about one proxied app request, in
// one allocation: what the shared reverse proxy (Server.appProxy) reads
// back through the request's state, the writers it wraps around the
// client's, the admission slot and the stats session.
type appExchange struct {
	transport *agentTransport
	target    *url.URL
	appPath   string
	rt        appurl.Route
	policy    policyWriter
	headers   releaseOnHeaders
	slot      admissionSlot
	// session is a plain request's (an upgrade's has its own).
	session StatsSession
	// upgrade is set for an upgrade request: a 101 is bridged by
	// bridgeUpgrade, and the session may outlive the handler.
	upgrade *upgradeHandoff
}

// appExchangeOf is the exchange of the request ctx belongs to.
func appExchangeOf(ctx context.Context) *appExchange {
	return stateOf(ctx).app
}

// newAppProxy is the reverse proxy every app request goes through; what
// differs per request comes from its appExchange.
func (s *Server) newAppProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: agentRoundTripper{},
		Rewrite: func(pr *httputil.ProxyRequest) {
			ex := appExchangeOf(pr.In.Context())
			s.rewrite(pr, ex.target, ex.appPath)
		},
		ModifyResponse: func(res *http.Response) error {
			ex := appExchangeOf(res.Request.Context())
			if ex.upgrade != nil && res.StatusCode == http.StatusSwitchingProtocols {
				// The 101 is written without WriteHeader: the policy
				// writer gets its head this way.
				return bridgeUpgrade(&ex.headers, res, ex.upgrade, ex.policy.applyTo)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, errUpgradeBridged) {
				return // a websocket that ran its course
			}
			ex := appExchangeOf(r.Context())
			s.badGateway(w, r, err, ex.target, ex.rt)
		},
		ErrorLog:   s.proxyLog,
		BufferPool: proxyBuffers,
	}
}

// agentRoundTripper sends a request with its agent's transport: the
// common warm request synchronously (syncrt.go), the others with the
// agent's http.Transport.
type agentRoundTripper struct{}

func (agentRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	at := appExchangeOf(r.Context()).transport
	if syncEligible(r) {
		return at.roundTripSync(r)
	}
	return at.t.RoundTrip(r)
}

// serveApp proxies a path or subdomain app request (docs/protocol.md#proxying-rules).
func (s *Server) serveApp(w http.ResponseWriter, r *http.Request, rt appurl.Route) {
	tok, err := s.appToken(r, rt)
	var authzResponse http.Header
	if cold, ok := errors.AsType[*errColdPath](err); ok {
		s.metrics.fastPathBy.get(cold.reason).Inc()
		s.log.Info("dialer: fast-path token refused, asking authz", "reason", cold.reason, "error", cold.err,
			"host", r.Host, "path", r.URL.Path, "request_id", requestID(r.Context()))
		if s.authz == nil || len(r.Header.Values("Origin")) > 0 && r.Header.Get(edgewire.WarmRouteHeader) != edgewire.WarmRouteValue {
			// With Origin off Envoy's warm routes, ext_proc may decide
			// CORS from the claims Envoy verified, which are not this
			// request's: only a request that meets ext_authz may be
			// answered.
			s.toColdPath(w, r, rt)
			return
		}
		var done bool
		authzResponse, done, err = s.consultAuthz(w, r)
		if err != nil {
			s.log.Warn("dialer: asking authz failed", "error", err, "request_id", requestID(r.Context()))
			w.WriteHeader(http.StatusServiceUnavailable) // as Envoy's ext_authz on error
			return
		}
		if done {
			return
		}
		tok, err = s.appToken(r, rt)
	}
	if err != nil {
		s.refuseToken(w, r, err)
		return
	}
	st := stateOf(r.Context())
	if st == nil {
		// Served without instrument (not the case in New's handler).
		st = &requestState{}
		r = r.WithContext(context.WithValue(r.Context(), requestStateKey{}, st))
	}
	ex := &appExchange{rt: rt}
	// Envoy's ext_proc runs only for cross-origin requests (fast path):
	// the response policy applies here to every response. A same-host
	// Origin is allowed here (the token matches this host, so its user
	// owns the app); others are not, and ext_proc, applying the same
	// policy again, decides them with the owner lookup.
	var origin string
	if o := r.Header.Values("Origin"); len(o) == 1 {
		origin = o[0]
	}
	ex.policy = policyWriter{ResponseWriter: w, after: authzResponse, ex: extproc.Exchange{
		Method: r.Method, Host: r.Host, Origin: origin,
		App: extproc.TokenAppInfo(tok.Request.AccessMethod, tok.CORSBehavior, tok.UserID),
	}}
	w = &ex.policy

	// A target built before for the same app URL, agent and app passed
	// every check below that depends only on them.
	key := targetKey{appURL: tok.AppURL, agent: tok.AgentID, slugOrPort: rt.Request.AppSlugOrPort}
	known, hit := s.targets.get(key)
	var appURL *url.URL
	if !hit {
		appURL, err = url.Parse(tok.AppURL)
		if err != nil || tok.AppURL == "" {
			desc := fmt.Sprintf("Application has an invalid URL %q", tok.AppURL)
			if err != nil {
				desc += ": " + err.Error()
			}
			s.writePage(w, coderhttp.Page{Status: http.StatusBadRequest, Title: "Bad Request", Description: desc, Retry: true})
			return
		}
		if p := appURL.Port(); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil {
				coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{
					Message: fmt.Sprintf("App URL %q has an invalid port %q.", tok.AppURL, p),
					Detail:  err.Error(),
				})
				return
			}
			if n < minimumAppPort {
				coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{
					Message: fmt.Sprintf("Application port %d is not permitted. Coder reserves ports less than %d for internal use.", n, minimumAppPort),
				})
				return
			}
		}
		known.appQuery = appURL.RawQuery
	}

	ex.appPath = escapedAppPath(r, rt)
	if ex.appPath == "" {
		// Apps resolve relative URLs against their root: add the slash.
		// Like Coder, the redirect keeps only the path.
		http.Redirect(w, r, rawPath(r)+"/", http.StatusTemporaryRedirect)
		return
	}
	if ex.appPath == "/" && r.URL.RawQuery == "" && known.appQuery != "" {
		// The app's default query (e.g. code-server's folder=) must be
		// visible to client-side code, so redirect rather than merge.
		http.Redirect(w, r, rawPath(r)+"?"+known.appQuery, http.StatusTemporaryRedirect)
		return
	}

	if !hit {
		known.target, err = s.upstreamURL(appURL, tok, rt)
		if err != nil {
			s.writePage(w, coderhttp.Page{Status: http.StatusBadRequest, Title: "Bad Request", Description: err.Error(), Retry: true})
			return
		}
		s.targets.put(key, known)
	}
	ex.target = known.target
	ex.transport = s.transports.get(tok.AgentID)

	// A request authz authorized (its token header, from Envoy's ext_authz
	// or the dialer's own Check) may take the slots kept for it: it cost a
	// Check and often an issue call at the primary, and a warm flood must
	// not shed every new session.
	if !s.admitInto(w, r, &ex.slot, tok.AgentID, len(r.Header.Values(edgewire.AppTokenHeader)) == 1) {
		return
	}
	defer ex.slot.release()
	ex.headers = releaseOnHeaders{ResponseWriter: w, slot: &ex.slot}
	w = &ex.headers

	st.app = ex
	if !isUpgrade(r) {
		s.stats.begin(&ex.session, tok)
		defer ex.session.End()
		s.appProxy.ServeHTTP(w, r)
		return
	}
	// The session may outlive the handler: what it keeps must not hold
	// ex, whose writers hold the HTTP server's per-request state.
	sess := s.stats.Start(tok)
	s.upgrades.add()
	s.metrics.websockets.WithLabelValues("app").Inc()
	ex.upgrade = &upgradeHandoff{cut: cutContext(r.Context()), poller: pollerOf(r.Context()), end: func() {
		s.metrics.websockets.WithLabelValues("app").Dec()
		s.upgrades.done()
		sess.End()
	}}
	defer ex.upgrade.handlerDone()
	s.appProxy.ServeHTTP(w, r)
}

// escapedAppPath is the raw request path beneath the app's base path, as
// the client sent it: "" when a path app lacks its trailing slash.
func escapedAppPath(r *http.Request, rt appurl.Route) string {
	p := rawPath(r)
	if rt.Kind == appurl.KindSubdomainApp {
		if p == "" {
			return "/"
		}
		return p
	}
	// "/@user/ws/apps/app/rest": from the fifth slash on, "/rest".
	i := -1
	for range 5 {
		j := strings.IndexByte(p[i+1:], '/')
		if j < 0 {
			return ""
		}
		i += 1 + j
	}
	return p[i:]
}

// targetCache remembers the upstream URL of app URLs that passed
// serveApp's checks, per agent and app slug or port (which is all the
// checks and the URL depend on): parsing and building them cost
// allocations on every request. The URLs are shared: read-only. It holds
// at most maxKnownTargets and starts afresh when full.
type targetCache struct {
	mu sync.RWMutex // guards m
	m  map[targetKey]knownTarget
}

const maxKnownTargets = 4096

type targetKey struct {
	appURL     string
	agent      uuid.UUID
	slugOrPort string
}

type knownTarget struct {
	appQuery string // the app URL's query
	target   *url.URL
}

func (c *targetCache) get(k targetKey) (knownTarget, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.m[k]
	return t, ok
}

func (c *targetCache) put(k targetKey, t knownTarget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxKnownTargets {
		c.m = make(map[targetKey]knownTarget)
	}
	c.m[k] = t
}

// upstreamURL is the URL the request is sent to: the app URL's scheme and
// path, with its host replaced by the agent's tailnet address and its
// query dropped (the user's query is forwarded as-is). Port apps choose
// the scheme from the "s" suffix.
func (s *Server) upstreamURL(appURL *url.URL, tok tokens.SignedToken, rt appurl.Route) (*url.URL, error) {
	u := *appURL
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.User = nil
	if _, https, ok := appurl.PortInfo(rt.Request.AppSlugOrPort); ok {
		u.Scheme = "http"
		if https {
			u.Scheme = "https"
		}
	}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return nil, fmt.Errorf("application URL %q has unsupported scheme %q", tok.AppURL, u.Scheme)
	}
	u.Host = net.JoinHostPort(tailnet.AgentAddr(tok.AgentID).String(), port)
	return &u, nil
}

// rewrite builds the upstream request (docs/protocol.md#proxying-rules).
func (s *Server) rewrite(pr *httputil.ProxyRequest, target *url.URL, appPath string) {
	out, in := pr.Out, pr.In
	decoded, err := url.PathUnescape(appPath)
	if err != nil {
		decoded = appPath
	}
	out.URL.Path = decoded
	out.URL.RawPath = appPath
	pr.SetURL(target)
	// The app gets the path bytes the client sent (and authz decided on),
	// not Go's re-encoding of them.
	setRawPath(out.URL, joinRawPath(target.EscapedPath(), appPath))
	// The app sees the public host it was opened on.
	out.Host = in.Host

	// Envoy already wrote X-Forwarded-For with the client's address: keep
	// it exactly (Rewrite starts without it, so nothing is appended). The
	// values are shared with the incoming request, capped so that adding
	// to them copies.
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := in.Header.Values(h); len(v) > 0 {
			out.Header[h] = v[:len(v):len(v)]
		}
	}
	if out.Header.Get("X-Forwarded-Proto") == "" {
		out.Header.Set("X-Forwarded-Proto", s.accessURL.Scheme)
	}

	// wsedge's own headers, the visitor identity headers and underscore
	// spellings of protected headers never reach apps.
	for k := range out.Header {
		if edgewire.IsInternalHeader(k) || isUnderscoreSpelling(k) {
			delete(out.Header, k)
		}
	}
	for _, h := range visitorIdentityHeaders {
		delete(out.Header, h)
	}
	for _, h := range envoyClientHeaders {
		delete(out.Header, h)
	}

	if cookies := out.Header["Cookie"]; len(cookies) > 0 {
		out.Header["Cookie"] = appCookies(cookies)
		if len(out.Header["Cookie"]) == 0 {
			delete(out.Header, "Cookie")
		}
	}

	addMissingWebsocketKey(in, out)

	for _, names := range nonCanonicalHeaders {
		if v, ok := out.Header[names.canonical]; ok {
			delete(out.Header, names.canonical)
			out.Header[names.rfc] = v
		}
	}
	s.injectTrace(out)
}

// badGateway renders Coder's 502 page when the agent cannot be reached or
// the app fails to answer. On a port app whose failure looks like an
// HTTP/HTTPS mismatch it adds Coder's "Switch to HTTP(S)" action.
func (s *Server) badGateway(w http.ResponseWriter, r *http.Request, err error, target *url.URL, rt appurl.Route) {
	if errors.Is(err, errDialsBusy) {
		s.unavailable(w, r, "dials")
		return
	}
	s.log.Info("dialer: proxying to app failed", "error", err, "host", r.Host, "path", r.URL.Path, "request_id", requestID(r.Context()))
	page := coderhttp.Page{
		Status:      http.StatusBadGateway,
		Title:       "Bad Gateway",
		Description: "Failed to proxy request to application: " + err.Error(),
		Retry:       true,
	}
	if want, ok := schemeMismatch(err, target.Scheme); ok {
		if u, ok := s.switchSchemeURL(rt, want); ok {
			page.Action = &coderhttp.Action{URL: u, Text: "Switch to " + strings.ToUpper(want)}
			page.AdditionalInfo = "This error seems to be due to an app protocol mismatch, try switching to " + strings.ToUpper(want) + "."
		}
	}
	s.writePage(w, page)
}

// schemeMismatch guesses from a transport error that the agent port
// speaks the other protocol. Coder recognises TLS towards a plain HTTP
// server (a TLS record-header error, or Go's ErrSchemeMismatch); we also
// recognise plain HTTP towards a TLS server, which answers with a TLS
// alert record that Go reports as a malformed HTTP response.
func schemeMismatch(err error, scheme string) (want string, ok bool) {
	switch scheme {
	case "https":
		var recErr tls.RecordHeaderError
		if (errors.As(err, &recErr) && recErr.Msg == "first record does not look like a TLS handshake") ||
			errors.Is(err, http.ErrSchemeMismatch) {
			return "http", true
		}
	case "http":
		if strings.Contains(err.Error(), `malformed HTTP response "\x15\x03`) {
			return "https", true
		}
	}
	return "", false
}

// switchSchemeURL is the root of the same port app with the other
// protocol: the port's "s" suffix toggled, on the wildcard host, with the
// dashboard's scheme (as Coder builds it). ok is false for slug apps and
// path apps.
func (s *Server) switchSchemeURL(rt appurl.Route, want string) (string, bool) {
	port, _, isPort := appurl.PortInfo(rt.Request.AppSlugOrPort)
	if !isPort || rt.Kind != appurl.KindSubdomainApp || s.router.Wildcard == nil {
		return "", false
	}
	slug := strconv.Itoa(int(port))
	if want == "https" {
		slug += "s"
	}
	app := appurl.ApplicationURL{
		Prefix:        rt.Request.Prefix,
		AppSlugOrPort: slug,
		AgentName:     rt.Request.AgentNameOrID,
		WorkspaceName: rt.Request.WorkspaceNameOrID,
		Username:      rt.Request.UsernameOrID,
	}
	u := url.URL{Scheme: s.dashboardURL.Scheme, Host: app.Hostname(s.router.Wildcard.String())}
	return u.String(), true
}

// policyWriter applies the app response policy (extproc.ApplyResponsePolicy)
// to the headers of every response it writes: the app's, and the dialer's
// own pages for the app, as ext_proc would have.
type policyWriter struct {
	http.ResponseWriter
	ex extproc.Exchange
	// after are headers added once the policy ran, as Envoy's ext_authz
	// adds its response headers after ext_proc (an issued token's cookie).
	after   http.Header
	written bool
}

func (p *policyWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		if p.written {
			return
		}
		p.applyTo(p.Header())
	}
	p.ResponseWriter.WriteHeader(code)
}

// applyTo applies the policy, then the headers added after it, to h: the
// head of the one response this writer answers with.
func (p *policyWriter) applyTo(h http.Header) {
	p.written = true
	extproc.ApplyResponsePolicy(&p.ex, h)
	for k, vs := range p.after {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}

func (p *policyWriter) Write(b []byte) (int, error) {
	if !p.written {
		p.WriteHeader(http.StatusOK)
	}
	return p.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack (streaming
// responses, websocket upgrades).
func (p *policyWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// proxyBuffers lends the reverse proxy its copy buffers: without a pool
// httputil allocates 32 KiB for every response it copies.
var proxyBuffers = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
