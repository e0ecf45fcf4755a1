package appurl

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// LogoutSubdomain is the deprecated logout hostname; it redirects to the
// access URL.
const LogoutSubdomain = "coder-logout"

// ApplicationURL is a parsed subdomain-app label:
// [<prefix>---]<app-slug-or-port>--<agent>--<workspace>--<user>.
type ApplicationURL struct {
	Prefix        string
	AppSlugOrPort string
	AgentName     string
	WorkspaceName string
	Username      string
}

const nameRE = `[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*`

var appURLRE = regexp.MustCompile(`^(` + nameRE + `)--(` + nameRE + `)--(` + nameRE + `)--(` + nameRE + `)$`)

// ErrInvalidApplicationURL wraps every reason a subdomain does not parse.
var ErrInvalidApplicationURL = errors.New("invalid application url format")

// ParseSubdomainAppURL parses a subdomain label.
func ParseSubdomainAppURL(subdomain string) (ApplicationURL, error) {
	var a ApplicationURL
	rest := subdomain
	if i := strings.LastIndex(subdomain, "---"); i >= 0 {
		a.Prefix = subdomain[:i+3]
		rest = subdomain[i+3:]
	}
	m := appURLRE.FindStringSubmatch(rest)
	if m == nil {
		return ApplicationURL{}, fmt.Errorf("%w: %q", ErrInvalidApplicationURL, rest)
	}
	a.AppSlugOrPort, a.AgentName, a.WorkspaceName, a.Username = m[1], m[2], m[3], m[4]
	return a, nil
}

// String formats the subdomain label.
func (a ApplicationURL) String() string {
	return a.Prefix + a.AppSlugOrPort + "--" + a.AgentName + "--" + a.WorkspaceName + "--" + a.Username
}

// Hostname replaces the "*" of a wildcard pattern with the label.
func (a ApplicationURL) Hostname(pattern string) string {
	return strings.Replace(pattern, "*", a.String(), 1)
}

// PortInfo reads a port app: "8080" is HTTP on port 8080, "8443s" is HTTPS
// on 8443. isPort is false for app slugs.
func (a ApplicationURL) PortInfo() (port uint16, https bool, isPort bool) {
	return PortInfo(a.AppSlugOrPort)
}

// PortInfo reads an app-slug-or-port value as a port.
func PortInfo(slugOrPort string) (port uint16, https bool, isPort bool) {
	s := slugOrPort
	if strings.HasSuffix(s, "s") {
		s = strings.TrimSuffix(s, "s")
		https = true
	}
	if s == "" || strings.IndexFunc(s, func(c rune) bool { return c < '0' || c > '9' }) >= 0 {
		// Not a number (an app slug): answered before ParseUint, whose
		// error would cost allocations on every slug app request.
		return 0, false, false
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, false, false
	}
	return uint16(n), https, true
}
