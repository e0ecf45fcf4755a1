package appurl

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// HostnamePattern is a compiled wildcard app hostname such as
// "*.apps.example.com" or "*--apps.example.com".
type HostnamePattern struct {
	pattern string
	// suffix is everything after the "*", lower-cased, port removed.
	suffix string
	re     *regexp.Regexp
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ErrInvalidHostnamePattern wraps every reason a pattern is refused.
var ErrInvalidHostnamePattern = errors.New("invalid wildcard hostname pattern")

// CompileHostnamePattern validates a wildcard hostname with coderd's rules
// (docs/protocol.md#wildcard-hostname) and compiles its matcher.
func CompileHostnamePattern(pattern string) (*HostnamePattern, error) {
	bad := func(why string) (*HostnamePattern, error) {
		return nil, fmt.Errorf("%w %q: %s", ErrInvalidHostnamePattern, pattern, why)
	}
	p := strings.ToLower(strings.TrimSpace(pattern))
	if p == "" {
		return bad("empty")
	}
	if strings.HasPrefix(p, "http:") || strings.HasPrefix(p, "https:") {
		return bad("must not include a scheme")
	}
	// An optional :port is ignored for matching.
	if i := strings.LastIndexByte(p, ':'); i >= 0 {
		port := p[i+1:]
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return bad("invalid port")
		}
		p = p[:i]
	}
	if strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") {
		return bad("must not start or end with a period")
	}
	if strings.Count(p, "*") != 1 || !strings.HasPrefix(p, "*") {
		return bad(`must contain exactly one "*", as its first character`)
	}
	labels := strings.Split(p, ".")
	if len(labels) < 2 {
		return bad("must contain at least two labels")
	}
	for i, l := range labels {
		if i == 0 {
			l = strings.Replace(l, "*", "a", 1)
		}
		if !labelRE.MatchString(l) {
			return bad(fmt.Sprintf("label %q is not a valid DNS label", labels[i]))
		}
	}
	suffix := p[1:]
	re, err := regexp.Compile(`^\s*([^.]+)` + regexp.QuoteMeta(suffix) + `\.?(:\d+)?\s*$`)
	if err != nil {
		return bad(err.Error())
	}
	return &HostnamePattern{pattern: pattern, suffix: suffix, re: re}, nil
}

// String returns the pattern as it was configured.
func (p *HostnamePattern) String() string { return p.pattern }

// Suffix is the part after the "*", lower-cased and without port.
func (p *HostnamePattern) Suffix() string { return p.suffix }

// Match returns the subdomain part of a request host that matches the
// pattern. Like coderd it compares case-sensitively against the
// lower-cased pattern: browsers send lower-case hosts.
func (p *HostnamePattern) Match(host string) (subdomain string, ok bool) {
	m := p.re.FindStringSubmatch(host)
	if m == nil {
		return "", false
	}
	return m[1], true
}
