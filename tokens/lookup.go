package tokens

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/wsedge/wsedge/appurl"
)

// MaxTokenCandidates bounds the verification work one request can cause;
// coderd looks at no more than four.
const MaxTokenCandidates = 4

// FindToken looks for a signed app token that verifies and matches req,
// in coderd's order (docs/protocol.md#token-lookup-and-matching): the query parameter first, then each
// coder_signed_app_token cookie, four candidates at most. When the query
// parameter is present only terminal tokens are acceptable: the first
// verified non-terminal candidate ends the search with nothing.
func (v *Verifier) FindToken(ctx context.Context, query url.Values, cookies []*http.Cookie, req appurl.Request) (SignedToken, string, bool) {
	var candidates [MaxTokenCandidates]string
	n := 0
	fromQuery := false
	if q := query.Get(SignedAppTokenQueryParam); q != "" {
		candidates[n] = q
		n++
		fromQuery = true
	}
	for _, c := range cookies {
		if n == MaxTokenCandidates {
			break
		}
		if c.Name == SignedAppTokenCookie && c.Value != "" {
			candidates[n] = c.Value
			n++
		}
	}
	for _, raw := range candidates[:n] {
		tok, err := v.VerifyToken(ctx, raw)
		if err != nil {
			continue
		}
		if fromQuery && tok.Request.AccessMethod != appurl.AccessMethodTerminal {
			return SignedToken{}, "", false
		}
		if tok.MatchesRequest(req) {
			return tok, raw, true
		}
	}
	return SignedToken{}, "", false
}

// SessionToken finds the user's Coder session token for an issue call
// (docs/protocol.md#session-token-sources): the access method's app session cookie,
// then the coder_session_token cookie, the coder_session_token query
// parameter, the Coder-Session-Token header, and a bearer token. An app's
// own Authorization header therefore never shadows a Coder cookie.
// appSessionCookie is the access method's cookie name (see
// AppSessionCookieName).
func SessionToken(appSessionCookie string, cookies []*http.Cookie, query url.Values, header http.Header) string {
	cookie := func(name string) string {
		for _, c := range cookies {
			if c.Name == name && c.Value != "" {
				return c.Value
			}
		}
		return ""
	}
	if v := cookie(appSessionCookie); v != "" {
		return v
	}
	if v := cookie(SessionTokenCookie); v != "" {
		return v
	}
	if v := query.Get(SessionTokenQueryParam); v != "" {
		return v
	}
	if v := header.Get(SessionTokenHeader); v != "" {
		return v
	}
	if auth := header.Get("Authorization"); len(auth) > len("bearer ") && strings.EqualFold(auth[:len("bearer ")], "bearer ") {
		return strings.TrimSpace(auth[len("bearer "):])
	}
	return ""
}

// AppSessionCookieName is the app session cookie an access method uses:
// the per-wildcard subdomain cookie for subdomain apps, the path-app
// cookie for path apps and terminals.
func AppSessionCookieName(method appurl.AccessMethod, wildcardHostname string) string {
	if method == appurl.AccessMethodSubdomain {
		return SubdomainAppSessionCookie(wildcardHostname)
	}
	return PathAppSessionCookie
}
