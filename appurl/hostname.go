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
	return &HostnamePattern{pattern: pattern, suffix: p[1:]}, nil
}

// String returns the pattern as it was configured.
func (p *HostnamePattern) String() string { return p.pattern }

// Suffix is the part after the "*", lower-cased and without port.
func (p *HostnamePattern) Suffix() string { return p.suffix }

// Match returns the subdomain part of a request host that matches the
// pattern. Like coderd it compares case-sensitively against the
// lower-cased pattern: browsers send lower-case hosts.
//
// The host is read as coderd's pattern regexp reads it,
// `^\s*([^.]+)<suffix>\.?(:\d+)?\s*$` (hostMatchRE in the tests holds
// it and a fuzz test the two to each other), without a regexp: it runs
// on every app request.
func (p *HostnamePattern) Match(host string) (subdomain string, ok bool) {
	h := strings.TrimRight(host, asciiRESpace)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && allDigits(h[i+1:]) {
		h = h[:i]
	}
	h, _ = strings.CutSuffix(h, ".")
	rest, ok := strings.CutSuffix(h, p.suffix)
	if !ok || rest == "" || strings.IndexByte(rest, '.') >= 0 {
		return "", false
	}
	// The leading \s* takes what white space it can and leaves the
	// group at least one character.
	sub := strings.TrimLeft(rest, asciiRESpace)
	if sub == "" {
		sub = rest[len(rest)-1:]
	}
	return sub, true
}

// asciiRESpace is what \s matches in Go's regexp.
const asciiRESpace = "\t\n\f\r "

// allDigits reports whether s is one or more ASCII digits.
func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
