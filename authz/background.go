package authz

import (
	"net/http"
	"strings"
)

// A page's own requests — fetch, XHR, websockets, images — cannot follow
// the primary's login redirect: fetch follows it to the dashboard's origin
// and fails with a CORS error, a websocket just fails. So once the session
// is gone such a request is told, in Coder's JSON error shape, to sign in
// at the URL the redirect would have taken, and the page decides what to
// do (reload, open it). Navigations keep the redirect.
//
// While the session is alive nothing of this applies: an expired signed
// token with a valid session is re-issued without a redirect for every
// kind of request (the one-minute token expiring under a long-lived page
// is the normal case).

// isBackground reports whether the browser says the request is not a
// navigation (Sec-Fetch-Mode present and not "navigate"). Clients that do
// not send the header (older browsers, curl) get the redirect, as from
// Coder.
func (in *Input) isBackground() bool {
	mode := strings.ToLower(strings.TrimSpace(in.Header.Get("Sec-Fetch-Mode")))
	// "nested-navigate" is an early spelling Chromium sent for frames.
	return mode != "" && mode != "navigate" && mode != "nested-navigate"
}

// loginRedirect is the target of the primary's answer when it is a
// redirect (the primary redirects only to sign in), "" otherwise.
func loginRedirect(r *RelayedResponse) string {
	if r.Status < 300 || r.Status > 399 {
		return ""
	}
	return http.Header(r.Header).Get("Location")
}

// relay is the client's answer when the primary did not issue a token: its
// response verbatim, except a login redirect for a background request.
func (s *Service) relay(in *Input, r *RelayedResponse) Decision {
	if loc := loginRedirect(r); loc != "" && in.isBackground() {
		return loginRequired(loc, r.Header)
	}
	return relayDecision(r)
}
