package extproc

import (
	"strings"

	"github.com/wsedge/wsedge/tokens"
)

// setCookieName is the cookie name a Set-Cookie line sets, as browsers read
// it (RFC 6265bis §5.6): the name-value pair is the text before the first
// ';', the name is what precedes its first '=' with surrounding white space
// removed, and a pair without '=' is a cookie with an empty name whose
// value is the whole pair. ok is false for such nameless cookies.
func setCookieName(line string) (name string, ok bool) {
	pair, _, _ := strings.Cut(line, ";")
	name, _, ok = strings.Cut(pair, "=")
	if !ok {
		return "", false
	}
	name = strings.TrimSpace(name)
	return name, name != ""
}

// filterSetCookies drops every Set-Cookie line of an app response that sets
// one of Coder's cookies, whatever its Domain or Path: an app must not
// plant, overwrite or clear the credentials the proxy relies on.
//
// It also drops every nameless cookie ("=coder_signed_app_token=x", or a
// pair without '='). A browser stores it under the empty name and sends
// back its value alone, so the app gets to write a whole "name=value" into
// later Cookie headers — one that can shadow a Coder cookie for every
// parser that takes the first match. Recognising only the dangerous values
// would mean mirroring each browser's whitespace and quoting rules; nameless
// cookies are unusual enough (no common framework emits them) that dropping
// them all is the safer rule.
//
// It returns the lines kept, in order, and how many were dropped.
func filterSetCookies(lines []string) (kept []string, removed int) {
	for _, l := range lines {
		if name, ok := setCookieName(l); !ok || tokens.IsCoderCookie(name) {
			removed++
			continue
		}
		kept = append(kept, l)
	}
	return kept, removed
}
