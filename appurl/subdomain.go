package appurl

import (
	"errors"
	"fmt"
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
	// Four names joined by "--", a name being letters and digits in runs
	// joined by single hyphens (the tests hold this to coderd's regexp,
	// appURLRE; no regexp here: it runs on every subdomain app request).
	var parts [4]string
	label := rest
	for i := range parts {
		name, more, found := strings.Cut(rest, "--")
		if found == (i == len(parts)-1) || !isAppName(name) {
			return ApplicationURL{}, fmt.Errorf("%w: %q", ErrInvalidApplicationURL, label)
		}
		parts[i], rest = name, more
	}
	a.AppSlugOrPort, a.AgentName, a.WorkspaceName, a.Username = parts[0], parts[1], parts[2], parts[3]
	return a, nil
}

// isAppName reports whether s is [a-zA-Z0-9]+(-[a-zA-Z0-9]+)*.
func isAppName(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' && s[i-1] != '-':
		default:
			return false
		}
	}
	return true
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
