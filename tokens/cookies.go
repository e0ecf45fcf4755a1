package tokens

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// Names of Coder's cookies, query parameters and headers (docs/protocol.md#cookies).
const (
	SignedAppTokenCookie     = "coder_signed_app_token"
	SignedAppTokenQueryParam = "coder_signed_app_token_23db1dde"
	PathAppSessionCookie     = "coder_path_app_session_token"
	// subdomainAppSessionCookiePrefix is followed by "_<hash of wildcard>".
	subdomainAppSessionCookiePrefix = "coder_subdomain_app_session_token"
	SessionTokenCookie              = "coder_session_token"
	SessionTokenQueryParam          = "coder_session_token"
	SessionTokenHeader              = "Coder-Session-Token"
	SmuggledAPIKeyQueryParam        = "coder_application_connect_api_key_35e783"
	oauthStateCookie                = "oauth_state"
	oauthRedirectCookie             = "oauth_redirect"
)

// SubdomainAppSessionCookie is the subdomain session cookie name for a
// wildcard hostname: the prefix, "_", and the hex of the first 16 bytes of
// SHA-256 of the wildcard exactly as configured. A parent-domain cookie of
// another proxy therefore never shadows this proxy's.
func SubdomainAppSessionCookie(wildcardHostname string) string {
	sum := sha256.Sum256([]byte(wildcardHostname))
	return subdomainAppSessionCookiePrefix + "_" + hex.EncodeToString(sum[:16])
}

// SubdomainCookieDomain is the Domain of the subdomain session cookie:
// everything after the first "." of the wildcard, with a leading ".";
// "*.apps.x.com" → ".apps.x.com", "*--apps.x.com" → ".x.com".
func SubdomainCookieDomain(wildcardHostname string) string {
	_, rest, ok := strings.Cut(wildcardHostname, ".")
	if !ok {
		return ""
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	return "." + rest
}

// hostCookiePrefix is the prefix coderd's __Host- cookie mode adds to the
// names of its host-only cookies.
const hostCookiePrefix = "__Host-"

// IsCoderCookie reports whether a cookie name is one of Coder's, which
// never reach a workspace app. The "__Host-" spelling of a Coder cookie
// (coderd's host-prefix cookie mode) counts too: it carries the same
// credential.
func IsCoderCookie(name string) bool {
	name = strings.TrimPrefix(name, hostCookiePrefix)
	switch name {
	case SessionTokenCookie, oauthStateCookie, oauthRedirectCookie, PathAppSessionCookie, SignedAppTokenCookie:
		return true
	}
	return strings.HasPrefix(name, subdomainAppSessionCookiePrefix)
}

const asciiSpace = " \t\r\n"

// StripCoderCookies removes Coder's cookies from a Cookie header value and
// keeps every other pair byte for byte, in order, joined with "; ".
//
// While every pair is kept and already so joined, the result is a prefix
// of header: a header without Coder's cookies costs no allocation.
func StripCoderCookies(header string) string {
	var b strings.Builder
	n, kept, copied := 0, 0, false // while !copied, the result is header[:n]
	for rest, more := header, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ";")
		// Trim only ASCII white space, as net/http and browsers do: a
		// pair is kept byte for byte, never altered into another cookie.
		p := strings.Trim(part, asciiSpace)
		if p == "" {
			continue
		}
		name, _, _ := strings.Cut(p, "=")
		if IsCoderCookie(strings.Trim(name, asciiSpace)) {
			continue
		}
		sep := "; "
		if kept == 0 {
			sep = ""
		}
		kept++
		if !copied {
			if next := header[n:]; strings.HasPrefix(next, sep) && strings.HasPrefix(next[len(sep):], p) {
				n += len(sep) + len(p)
				continue
			}
			copied = true
			// What is left writes at most one more byte per ';' (a
			// space after it).
			b.Grow(n + len(sep) + len(p) + len(rest) + strings.Count(rest, ";"))
			b.WriteString(header[:n])
		}
		b.WriteString(sep)
		b.WriteString(p)
	}
	if !copied {
		return header[:n]
	}
	return b.String()
}

// CookieConfig holds the deployment's cookie settings.
type CookieConfig struct {
	Secure   bool
	SameSite http.SameSite
}

func (c CookieConfig) apply(ck *http.Cookie) *http.Cookie {
	ck.Secure = c.Secure
	ck.SameSite = c.SameSite
	ck.HttpOnly = true
	return ck
}

// SignedTokenCookie is the cookie that carries a signed app token: host
// only, Path = the request's base path, Expires = the token's exp.
func (c CookieConfig) SignedTokenCookie(token string, basePath string, expiry time.Time) *http.Cookie {
	return c.apply(&http.Cookie{Name: SignedAppTokenCookie, Value: token, Path: basePath, Expires: expiry})
}

// PathAppSessionCookie is the session cookie for path apps and terminals on
// the access URL: host only, Path "/", a session cookie.
func (c CookieConfig) PathAppSessionCookie(apiKey string) *http.Cookie {
	return c.apply(&http.Cookie{Name: PathAppSessionCookie, Value: apiKey, Path: "/"})
}

// SubdomainAppSessionCookie is the session cookie for subdomain apps, on
// the wildcard's parent domain.
func (c CookieConfig) SubdomainAppSessionCookie(wildcardHostname, apiKey string) *http.Cookie {
	return c.apply(&http.Cookie{
		Name:   SubdomainAppSessionCookie(wildcardHostname),
		Value:  apiKey,
		Domain: SubdomainCookieDomain(wildcardHostname),
		Path:   "/",
	})
}
