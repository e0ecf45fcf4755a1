package extproc

import (
	"strings"

	"github.com/wsedge/wsedge/tokens"
)

// setCookieName is the cookie name a Set-Cookie line sets: the text before
// the first '=' with surrounding white space removed, as browsers read it
// (RFC 6265 §5.2). A line without '=' sets no named cookie.
func setCookieName(line string) string {
	name, _, ok := strings.Cut(line, "=")
	if !ok {
		return ""
	}
	return strings.TrimSpace(name)
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
