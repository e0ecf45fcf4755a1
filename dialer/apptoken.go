package dialer

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

// Why a request's app token was refused.
var (
	ErrNoAppToken        = errors.New("no app token")
	ErrAppTokenInvalid   = errors.New("app token does not verify")
	ErrAppTokenMismatch  = errors.New("app token is for another request")
	ErrAppTokenNoAgent   = errors.New("app token names no agent")
	errTooManyAppTokens  = errors.New("more than one app token header")
	appTokenRefusedTitle = "Missing or invalid app token."
)

// appToken reads, verifies and matches the token authz attached to the
// request. Only a token signed by a current key and issued for the very
// request being served is accepted. Without authz's header an app request
// may come by Envoy's fast path (fastPathToken).
func (s *Server) appToken(r *http.Request, rt appurl.Route) (tokens.SignedToken, error) {
	vals := r.Header.Values(edgewire.AppTokenHeader)
	switch {
	case len(vals) == 0 && (rt.Kind == appurl.KindSubdomainApp || rt.Kind == appurl.KindPathApp):
		return s.fastPathToken(r, rt)
	case len(vals) == 0 || vals[0] == "":
		return tokens.SignedToken{}, ErrNoAppToken
	case len(vals) > 1:
		return tokens.SignedToken{}, errTooManyAppTokens
	}
	tok, err := s.verifier.VerifyToken(r.Context(), vals[0])
	if err != nil {
		return tokens.SignedToken{}, errors.Join(ErrAppTokenInvalid, err)
	}
	if !tok.MatchesRequest(rt.Request) {
		return tokens.SignedToken{}, ErrAppTokenMismatch
	}
	if tok.AgentID == [16]byte{} {
		return tokens.SignedToken{}, ErrAppTokenNoAgent
	}
	return tok, nil
}

// refuseToken answers a request whose token was refused. Envoy only
// forwards requests authz allowed, so this is a misconfiguration or an
// attempt to reach the dialer directly: 401, nothing forwarded.
func (s *Server) refuseToken(w http.ResponseWriter, r *http.Request, err error) {
	s.metrics.tokenRefused.WithLabelValues(tokenRefusalReason(err)).Inc()
	s.log.Warn("dialer: refused app token", "reason", tokenRefusalReason(err), "error", err,
		"host", r.Host, "path", r.URL.Path, "remote", r.RemoteAddr, "request_id", requestID(r.Context()))
	coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{
		Message: appTokenRefusedTitle,
		Detail:  tokenRefusalReason(err),
	})
}

// tokenRefusalReason is a bounded label for a refusal.
func tokenRefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrNoAppToken), errors.Is(err, errTooManyAppTokens):
		return "missing"
	case errors.Is(err, tokens.ErrExpired):
		return "expired"
	case errors.Is(err, ErrAppTokenMismatch):
		return "mismatch"
	case errors.Is(err, ErrAppTokenNoAgent):
		return "no_agent"
	}
	return "invalid"
}

// coldPathMaxAge is how long a browser keeps edgewire.ColdPathCookie: long enough
// for the retry, short enough that the app is soon warm again.
const coldPathMaxAge = 30

// errColdPath wraps why a fast-path request is sent back to ext_authz.
type errColdPath struct {
	reason string // bounded label
	err    error
}

func (e *errColdPath) Error() string { return "fast path refused (" + e.reason + "): " + e.err.Error() }
func (e *errColdPath) Unwrap() error { return e.err }

// fastPathToken checks a request Envoy let through without ext_authz
// because jwt_authn verified its first coder_signed_app_token cookie.
// The dialer is the enforcement point: that same cookie must verify with
// the keys the dialer holds now (a key the primary withdrew fails at
// once, whatever Envoy's JWKS cache still says) and match this exact
// request; a request carrying the smuggled key or the token query
// parameter, or several token cookies, never takes this path. Any failure sends the browser back to
// ext_authz (errColdPath), never to the app. Only the first cookie counts
// — the one Envoy verified, whose claims Envoy's ext_proc and rate
// limiter used — so a planted cookie for another app cannot lend its
// owner to this request's CORS decision.
func (s *Server) fastPathToken(r *http.Request, rt appurl.Route) (tokens.SignedToken, error) {
	raw, n := firstTokenCookie(r)
	if raw == "" {
		if !mentionsTokenCookie(r) {
			return tokens.SignedToken{}, ErrNoAppToken
		}
		// Envoy's warm route saw a token cookie that Go does not read as
		// one (an invalid value): authz decides, as for any request
		// without a usable token.
		return tokens.SignedToken{}, &errColdPath{reason: "missing", err: ErrNoAppToken}
	}
	if n > 1 {
		// Only a planted cookie makes two (the app's own is host-only on
		// its base path). Which one Envoy verified, and so whose claims
		// its ext_proc and rate limiter used, is not certain here.
		return tokens.SignedToken{}, &errColdPath{reason: "several", err: errors.New("several token cookies")}
	}
	if queryCarriesToken(r.URL.RawQuery) {
		return tokens.SignedToken{}, &errColdPath{reason: "query", err: errors.New("smuggled key or token query parameter")}
	}
	tok, err := s.verifier.VerifyToken(r.Context(), raw)
	if err != nil {
		reason := "invalid"
		if errors.Is(err, tokens.ErrExpired) {
			reason = "expired"
		}
		return tokens.SignedToken{}, &errColdPath{reason: reason, err: errors.Join(ErrAppTokenInvalid, err)}
	}
	if !tok.MatchesRequest(rt.Request) {
		return tokens.SignedToken{}, &errColdPath{reason: "mismatch", err: ErrAppTokenMismatch}
	}
	if tok.AgentID == [16]byte{} {
		return tokens.SignedToken{}, ErrAppTokenNoAgent
	}
	s.metrics.fastPathBy.get("served").Inc()
	return tok, nil
}

// firstTokenCookie is the first coder_signed_app_token cookie, the one
// Envoy's jwt_authn reads ("" without one), and how many there are.
// Cookie headers without the name hold none, and are not parsed.
func firstTokenCookie(r *http.Request) (first string, n int) {
	if !slices.ContainsFunc(r.Header["Cookie"], func(line string) bool {
		return strings.Contains(line, tokens.SignedAppTokenCookie)
	}) {
		return "", 0
	}
	cs := r.CookiesNamed(tokens.SignedAppTokenCookie)
	if len(cs) == 0 {
		return "", 0
	}
	return cs[0].Value, len(cs)
}

// queryCarriesToken reports whether a raw query has a non-empty smuggled
// key or token parameter (url.Values.Get). A name can only be there
// spelt out or %-escaped: a query with neither is not parsed.
func queryCarriesToken(raw string) bool {
	if raw == "" || (!strings.Contains(raw, tokens.SmuggledAPIKeyQueryParam) &&
		!strings.Contains(raw, tokens.SignedAppTokenQueryParam) && !strings.Contains(raw, "%")) {
		return false
	}
	q, _ := url.ParseQuery(raw)
	return q.Get(tokens.SmuggledAPIKeyQueryParam) != "" || q.Get(tokens.SignedAppTokenQueryParam) != ""
}

// mentionsTokenCookie reports whether a Cookie header names the token
// cookie at all, whatever its value.
func mentionsTokenCookie(r *http.Request) bool {
	for _, v := range r.Header.Values("Cookie") {
		if strings.Contains(v, tokens.SignedAppTokenCookie+"=") {
			return true
		}
	}
	return false
}

// toColdPath answers a fast-path request the dialer would not serve and
// cannot ask authz about (no authz client, or an Origin header): a
// 307 to the same URL that expires the app's token cookie (host-only, on
// the app's base path, as authz sets it) and sets edgewire.ColdPathCookie on the
// same path. The browser's retry carries the marker, so Envoy does not
// verify and ext_authz decides exactly as it does for any request without
// a usable token (issue a new token, send to login, refuse); the marker
// is what keeps this from looping even when the refused cookie is one
// the dialer cannot expire (another Domain or Path). Nothing reaches the
// app.
func (s *Server) toColdPath(w http.ResponseWriter, r *http.Request, rt appurl.Route) {
	path := rt.Request.BasePath
	if path == "" {
		path = "/"
	}
	secure := s.accessURL.Scheme == "https"
	h := w.Header()
	h.Add("Set-Cookie", (&http.Cookie{Name: tokens.SignedAppTokenCookie, Value: "", Path: path, MaxAge: -1, HttpOnly: true, Secure: secure}).String())
	h.Add("Set-Cookie", (&http.Cookie{Name: edgewire.ColdPathCookie, Value: "1", Path: path, MaxAge: coldPathMaxAge, HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}).String())
	h.Set("Cache-Control", "no-store")
	http.Redirect(w, r, r.URL.RequestURI(), http.StatusTemporaryRedirect)
}

// appCookies are the Cookie header lines an app gets: Coder's cookies
// (tokens.StripCoderCookies) and edgewire.ColdPathCookie removed, every
// other pair kept byte for byte, lines left empty dropped. Lines with
// nothing to remove are the very strings given, in the very slice when
// no line changes.
func appCookies(lines []string) []string {
	var out []string // nil while every line is kept as it is
	for i, line := range lines {
		kept := tokens.StripCoderCookies(line)
		if strings.Contains(kept, edgewire.ColdPathCookie) {
			kept = stripColdPathCookie(kept)
		}
		if out == nil && kept == line && kept != "" {
			continue
		}
		if out == nil {
			out = make([]string, i, len(lines))
			copy(out, lines[:i])
		}
		if kept != "" {
			out = append(out, kept)
		}
	}
	if out == nil {
		return lines
	}
	return out
}

// stripColdPathCookie removes edgewire.ColdPathCookie from a Cookie header value,
// keeping every other pair byte for byte.
func stripColdPathCookie(header string) string {
	var kept []string
	for _, part := range strings.Split(header, ";") {
		p := strings.Trim(part, " \t")
		if p == "" {
			continue
		}
		if name, _, _ := strings.Cut(p, "="); strings.TrimSpace(name) == edgewire.ColdPathCookie {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "; ")
}
