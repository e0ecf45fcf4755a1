package extproc

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/wsedge/wsedge/appurl"
)

// Header names of the CORS protocol.
const (
	hdrOrigin            = "Origin"
	hdrVary              = "Vary"
	hdrACAO              = "Access-Control-Allow-Origin"
	hdrACAC              = "Access-Control-Allow-Credentials"
	hdrACAM              = "Access-Control-Allow-Methods"
	hdrACAH              = "Access-Control-Allow-Headers"
	hdrACRM              = "Access-Control-Request-Method"
	hdrACRH              = "Access-Control-Request-Headers"
	hdrContentTypeOpts   = "X-Content-Type-Options"
	hdrSetCookie         = "Set-Cookie"
	corsBehaviorSimple   = "simple"
	corsBehaviorPassthru = "passthru"
)

// appCORSHeaders are the app response headers removed unless the app's CORS
// behaviour is passthru (Coder's proxy deletes exactly these four).
var appCORSHeaders = []string{hdrACAO, hdrACAC, hdrACAM, hdrACAH}

// corsVaryValues are the Vary values removed with them, compared without
// regard to case. "Access-Control-Request-Methods" (plural) is what Coder's
// proxy removes; the singular, which is the real header name, goes too.
var corsVaryValues = []string{hdrOrigin, "Access-Control-Request-Methods", hdrACRM, hdrACRH}

// allowedMethods are the methods a same-owner origin may use (docs/protocol.md#cors); the
// preflight's own OPTIONS is always allowed, as go-chi/cors does.
var allowedMethods = []string{http.MethodHead, http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// methodAllowed reports whether a cross-origin request may use method.
func methodAllowed(method string) bool {
	m := strings.ToUpper(method)
	if m == http.MethodOptions {
		return true
	}
	for _, a := range allowedMethods {
		if a == m {
			return true
		}
	}
	return false
}

// originApp reads an Origin header as a subdomain app on this proxy's
// wildcard: the request resolve-app-owner takes. ok is false for anything
// else (another site, "null", a bad label), which is never allowed.
func originApp(pattern *appurl.HostnamePattern, rawOrigin string) (appurl.Request, bool) {
	if pattern == nil || rawOrigin == "" {
		return appurl.Request{}, false
	}
	u, err := url.Parse(rawOrigin)
	if err != nil || u.Host == "" {
		return appurl.Request{}, false
	}
	return hostApp(pattern, u.Host)
}

// hostApp reads a Host (with optional port) as a subdomain app.
func hostApp(pattern *appurl.HostnamePattern, host string) (appurl.Request, bool) {
	sub, ok := pattern.Match(host)
	if !ok {
		return appurl.Request{}, false
	}
	a, err := appurl.ParseSubdomainAppURL(sub)
	if err != nil {
		return appurl.Request{}, false
	}
	return appurl.Request{
		AccessMethod:      appurl.AccessMethodSubdomain,
		BasePath:          "/",
		Prefix:            a.Prefix,
		UsernameOrID:      a.Username,
		WorkspaceNameOrID: a.WorkspaceName,
		AgentNameOrID:     a.AgentName,
		AppSlugOrPort:     a.AppSlugOrPort,
	}, true
}

// parseHeaderList splits Access-Control-Request-Headers into canonical
// names the way go-chi/cors does (coderd's CORS handler): names are split
// at commas and spaces, characters other than letters, digits, '-' and '_'
// are dropped, and letters are upper-cased at the start and after '-',
// lower-cased elsewhere.
func parseHeaderList(list string) []string {
	var out []string
	var b strings.Builder
	upper := true
	flush := func() {
		if b.Len() > 0 {
			out = append(out, b.String())
			b.Reset()
		}
		upper = true
	}
	for i := 0; i < len(list); i++ {
		c := list[i]
		switch {
		case c >= 'a' && c <= 'z':
			if upper {
				c -= 'a' - 'A'
			}
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			if !upper {
				c += 'a' - 'A'
			}
			b.WriteByte(c)
		case c == '-' || c == '_' || c >= '0' && c <= '9':
			b.WriteByte(c)
		}
		if c == ' ' || c == ',' {
			flush()
			continue
		}
		upper = c == '-'
	}
	flush()
	return out
}

// preflightHeaders is the answer to a preflight in simple mode, as
// go-chi/cors builds it: the three Vary values always; when allowed, the
// origin echoed, the requested method (upper case), the requested headers
// (any header is allowed) and credentials. There is no Max-Age.
func preflightHeaders(allowed bool, origin, reqMethod, reqHeaders string) http.Header {
	h := http.Header{}
	h.Add(hdrVary, hdrOrigin)
	h.Add(hdrVary, hdrACRM)
	h.Add(hdrVary, hdrACRH)
	if !allowed {
		return h
	}
	h.Set(hdrACAO, origin)
	h.Set(hdrACAM, strings.ToUpper(reqMethod))
	if hs := parseHeaderList(reqHeaders); len(hs) > 0 {
		h.Set(hdrACAH, strings.Join(hs, ", "))
	}
	h.Set(hdrACAC, "true")
	return h
}

// cleanVary removes the CORS values from each Vary line of an app's
// response and drops lines left empty. Unlike Coder's proxy, which compares
// whole lines, values inside a comma-separated line are removed too, so
// "Origin, Accept-Encoding" keeps only "Accept-Encoding".
func cleanVary(lines []string) (kept []string, changed bool) {
	for _, line := range lines {
		var vals []string
		for v := range strings.SplitSeq(line, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				changed = true
				continue
			}
			if isCORSVary(v) {
				changed = true
				continue
			}
			vals = append(vals, v)
		}
		if len(vals) == 0 {
			continue
		}
		joined := strings.Join(vals, ", ")
		if joined != line {
			changed = true
		}
		kept = append(kept, joined)
	}
	return kept, changed
}

func isCORSVary(v string) bool {
	for _, c := range corsVaryValues {
		if strings.EqualFold(v, c) {
			return true
		}
	}
	return false
}
