package extproc

import (
	"strings"

	"github.com/wsedge/wsedge/tokens"
)

// setCookieName is the name a Set-Cookie line's cookie has when the
// browser sends it back: the text before the first '=' with surrounding
// white space removed (RFC 6265 §5.2). A nameless cookie is sent back as
// its bare value, so "Set-Cookie: =coder_session_token=x" comes back as
// "coder_session_token=x" and "Set-Cookie: coder_session_token" as
// "coder_session_token": for those the name is read from the value.
func setCookieName(line string) string {
	pair, _, _ := strings.Cut(line, ";")
	name, value, ok := strings.Cut(pair, "=")
	name = strings.TrimSpace(name)
	if !ok || name != "" {
		return name
	}
	shadow, _, _ := strings.Cut(value, "=")
	return strings.TrimSpace(shadow)
}

// filterSetCookies drops every Set-Cookie line of an app response that sets
// one of Coder's cookies, whatever its Domain or Path: an app must not
// plant, overwrite or clear the credentials the proxy relies on. It returns
// the lines kept, in order, and how many were dropped.
func filterSetCookies(lines []string) (kept []string, removed int) {
	for _, l := range lines {
		if tokens.IsCoderCookie(setCookieName(l)) {
			removed++
			continue
		}
		kept = append(kept, l)
	}
	return kept, removed
}
