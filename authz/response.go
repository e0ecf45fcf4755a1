package authz

// All output shaping of the pipeline lives here: what an allow adds to the
// request and the response (the token header, the signed token cookie, the
// cookies the app never sees, dynamic metadata), what a denial answers
// (Coder's error page or JSON, a redirect with the session cookie, the
// primary's answer relayed), and the translation of a Decision into
// Envoy's CheckResponse. The steps decide; this file spells the answer.

import (
	"net/http"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

// Allow: what the dialer and the browser get with a verified token.

// allow forwards the request to the dialer with the verified token.
func (s *Service) allow(in *Input, tok tokens.SignedToken, raw string, issued bool) Decision {
	d := Decision{
		Allow:          true,
		UpstreamHeader: http.Header{},
		Outcome:        "allow_cookie",
	}
	d.UpstreamHeader.Set(edgewire.AppTokenHeader, raw)
	if lines := in.Header.Values("Cookie"); len(lines) > 0 {
		stripped := tokens.StripCoderCookies(strings.Join(lines, "; "))
		if stripped == "" {
			d.UpstreamRemove = append(d.UpstreamRemove, "Cookie")
		} else {
			d.UpstreamHeader.Set("Cookie", stripped)
		}
	}
	if issued {
		d.Outcome = "allow_issued"
		d.ResponseHeader = http.Header{"Set-Cookie": {s.cfg.Cookies.SignedTokenCookie(raw, tok.Request.BasePath, tok.Expiry).String()}}
	}
	app := tok.Request.AppSlugOrPort
	cors := tok.CORSBehavior
	if cors == "" {
		cors = "simple"
	}
	user := tok.UserID.String()
	d.Metadata = map[string]string{
		edgewire.MetaUserID:       user,
		edgewire.MetaWorkspaceID:  tok.WorkspaceID.String(),
		edgewire.MetaAgentID:      tok.AgentID.String(),
		edgewire.MetaApp:          app,
		edgewire.MetaAccessMethod: string(tok.Request.AccessMethod),
		edgewire.MetaCORSBehavior: cors,
		edgewire.MetaRateLimitKey: user,
	}
	return d
}

// proxyHeaders adds to an answer for the browser what Coder's proxy adds
// to everything but the answers of its subdomain-app handler (which also
// serves the logout host): the build version and nosniff.
func (s *Service) proxyHeaders(in *Input, d *Decision) {
	if s.cfg.router.IsAppHost(s.effectiveHost(in)) {
		return
	}
	if d.Header == nil {
		d.Header = http.Header{}
	}
	coderhttp.SetProxyHeaders(d.Header, s.cfg.Version)
}

// Redirects.

// handOff answers a smuggled key that decrypted: the app session cookie
// and a 303 to location, the same URL without the key.
func (s *Service) handOff(t *target, apiKey, location string) Decision {
	return redirect(location, "smuggle_cookie_set", s.sessionCookie(t, apiKey))
}

// sessionCookie is the app session cookie for the request's access method
// (docs/protocol.md#cookies).
func (s *Service) sessionCookie(t *target, apiKey string) *http.Cookie {
	if t.req.AccessMethod == appurl.AccessMethodSubdomain {
		return s.cfg.Cookies.SubdomainAppSessionCookie(s.cfg.WildcardHostname, apiKey)
	}
	return s.cfg.Cookies.PathAppSessionCookie(apiKey)
}

// redirect is a 303 See Other to location, optionally setting cookies.
func redirect(location string, outcome string, cookies ...*http.Cookie) Decision {
	h := http.Header{}
	h.Set("Location", location)
	for _, c := range cookies {
		h.Add("Set-Cookie", c.String())
	}
	return deny(http.StatusSeeOther, h, nil, outcome)
}

// Refusals: Coder's error page for browsers, its JSON for others.

// page is one of wsedge's own HTML error pages, linking to the dashboard.
func (s *Service) page(status int, title, description, outcome string) Decision {
	return renderPage(coderhttp.Page{
		Status:       status,
		Title:        title,
		Description:  description,
		DashboardURL: s.cfg.DashboardURL.String(),
	}, outcome)
}

// internalError is a 500: the primary's answer could not be trusted.
func (s *Service) internalError(in *Input, detail, outcome string) Decision {
	return s.failure(in, http.StatusInternalServerError, "Internal Server Error", "Internal server error", detail, outcome)
}

// badGateway is a 502: the primary could not be reached in time.
func (s *Service) badGateway(in *Input) Decision {
	const detail = "The proxy could not reach the Coder primary to authorize this request. Try again shortly."
	return s.failure(in, http.StatusBadGateway, "Bad Gateway", "Bad Gateway", detail, "primary_unreachable")
}

// overloaded is the answer to work authz sheds: 503 with Retry-After.
func (s *Service) overloaded(in *Input, outcome string) Decision {
	const detail = "The workspace proxy is handling too many requests right now. Try again shortly."
	d := s.failure(in, http.StatusServiceUnavailable, "Service Unavailable", "Service Unavailable", detail, outcome)
	d.Header.Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	return d
}

// failure answers a failure of the proxy itself, worth a retry: the page
// with Retry for browsers, JSON for other clients.
func (s *Service) failure(in *Input, status int, title, message, detail, outcome string) Decision {
	if !in.wantsHTML() {
		return denyJSON(status, coderhttp.Response{Message: message, Detail: detail}, outcome)
	}
	return renderPage(coderhttp.Page{
		Status:       status,
		Title:        title,
		Description:  detail,
		DashboardURL: s.cfg.DashboardURL.String(),
		Retry:        true,
	}, outcome)
}

// missingHost is coderd's JSON answer to a request whose Host cannot be
// determined, whatever the client accepts.
func missingHost() Decision {
	return denyJSON(http.StatusBadRequest, coderhttp.Response{Message: "Could not determine request Host."}, "bad_host")
}

// renderPage returns an HTML deny decision: Coder's error page.
func renderPage(p coderhttp.Page, outcome string) Decision {
	return deny(p.Status, coderhttp.PageHeader(), p.HTML(), outcome)
}

// denyJSON answers with coderd's JSON error body.
func denyJSON(status int, resp coderhttp.Response, outcome string) Decision {
	b, err := coderhttp.EncodeJSON(resp)
	if err != nil {
		// A Response of strings always encodes; never answer with an
		// empty body if it does not.
		b = []byte(http.StatusText(status))
	}
	h := http.Header{}
	h.Set("Content-Type", coderhttp.JSONContentType)
	return deny(status, h, b, outcome)
}

// loginRequired is the answer to a background request that needs a
// sign-in: 401 in Coder's error shape plus the sign-in URL, never cached.
func loginRequired(loginURL string, relayed http.Header) Decision {
	b, err := coderhttp.EncodeJSON(struct {
		coderhttp.Response
		LoginURL string `json:"login_url"`
	}{
		Response: coderhttp.Response{
			Message: "You must sign in to use this application.",
			Detail:  "Your session has ended or this browser has none. Sign in at " + loginURL + " and retry.",
		},
		LoginURL: loginURL,
	})
	if err != nil {
		b = []byte(http.StatusText(http.StatusUnauthorized))
	}
	h := http.Header{}
	h.Set("Content-Type", coderhttp.JSONContentType)
	h.Set("Cache-Control", "no-store")
	// Cookies the primary set with its redirect (clearing a dead
	// session, say) still apply.
	for _, c := range relayed.Values("Set-Cookie") {
		h.Add("Set-Cookie", c)
	}
	return deny(http.StatusUnauthorized, h, b, "login_required")
}

// relayDecision turns the primary's non-201 answer into the client's
// response, headers and body as they came, minus the framing headers that
// Envoy recomputes.
func relayDecision(r *RelayedResponse) Decision {
	h := http.Header{}
	for k, vs := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "Trailer", "Proxy-Connection":
			continue
		}
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	return deny(r.Status, h, r.Body, "primary_relay")
}

// deny answers the client in place of the upstream.
func deny(status int, header http.Header, body []byte, outcome string) Decision {
	if header == nil {
		header = http.Header{}
	}
	return Decision{Status: status, Header: header, Body: body, Outcome: outcome}
}

// Envoy: a Decision as a CheckResponse.

// checkResponse builds Envoy's answer from a decision.
func checkResponse(d Decision) *authv3.CheckResponse {
	if !d.Allow {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
				Headers: headerOptions(d.Header, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				Body:    string(d.Body),
			}},
		}
	}
	ok := &authv3.OkHttpResponse{
		Headers:              headerOptions(d.UpstreamHeader, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		HeadersToRemove:      lower(d.UpstreamRemove),
		ResponseHeadersToAdd: headerOptions(d.ResponseHeader, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
	}
	resp := &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
	if len(d.Metadata) > 0 {
		// Every Check that allows carries this: the values and their
		// kinds are allocated together rather than two by two.
		fields := make(map[string]*structpb.Value, len(d.Metadata))
		vals := make([]structpb.Value, len(d.Metadata))
		strs := make([]structpb.Value_StringValue, len(d.Metadata))
		i := 0
		for k, v := range d.Metadata {
			strs[i].StringValue = v
			vals[i].Kind = &strs[i]
			fields[k] = &vals[i]
			i++
		}
		resp.DynamicMetadata = &structpb.Struct{Fields: fields}
	}
	return resp
}

// headerOptions converts headers in a stable order; repeated values (such
// as several Set-Cookie lines) stay separate headers.
func headerOptions(h http.Header, action corev3.HeaderValueOption_HeaderAppendAction) []*corev3.HeaderValueOption {
	if len(h) == 0 {
		return nil
	}
	keys := make([]string, 0, len(h))
	n := 0
	for k, vs := range h {
		keys = append(keys, k)
		n += len(vs)
	}
	sort.Strings(keys)
	out := make([]*corev3.HeaderValueOption, 0, n)
	opts := make([]corev3.HeaderValueOption, n)
	hvs := make([]corev3.HeaderValue, n)
	for _, k := range keys {
		name := lowerHeaderName(k)
		for i, v := range h[k] {
			a := action
			if i > 0 {
				a = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
			j := len(out)
			hvs[j].Key, hvs[j].Value = name, v
			opts[j].Header, opts[j].AppendAction = &hvs[j], a
			out = append(out, &opts[j])
		}
	}
	return out
}

// lowerNames are the lower-case forms of the header names authz's answers
// use, so that spelling them for Envoy allocates nothing.
var lowerNames = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		edgewire.AppTokenHeader, "Cookie", "Set-Cookie", "Location", "Content-Type", "Cache-Control",
		"Retry-After", "X-Content-Type-Options", "X-Coder-Build-Version", "Vary",
	} {
		m[http.CanonicalHeaderKey(k)] = strings.ToLower(k)
	}
	return m
}()

// lowerHeaderName is strings.ToLower(k), without allocating for the names
// authz uses.
func lowerHeaderName(k string) string {
	if l, ok := lowerNames[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

func lower(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToLower(s)
	}
	return out
}
