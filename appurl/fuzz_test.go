package appurl

import (
	"regexp"
	"strings"
	"testing"
)

// coderd's regexps for a subdomain-app label and a wildcard host: the
// parsers must read input exactly as they do.
var appURLRE = regexp.MustCompile(`^([a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*)--([a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*)--([a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*)--([a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*)$`)

func hostMatchRE(suffix string) *regexp.Regexp {
	return regexp.MustCompile(`^\s*([^.]+)` + regexp.QuoteMeta(suffix) + `\.?(:\d+)?\s*$`)
}

func FuzzParseSubdomainAppURL(f *testing.F) {
	for _, s := range []string{"code--main--dev--alice", "pre---8443s--a--b--c", "a---b---c--d--e--f", "--", "-----", "x"} {
		f.Add(s)
	}
	f.Add("a-b--c--d--e-")
	f.Add("a--b--c--d--e")
	f.Add("a-b-c--d--e--f9")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseSubdomainAppURL(s)
		rest := s
		if i := strings.LastIndex(s, "---"); i >= 0 {
			rest = s[i+3:]
		}
		m := appURLRE.FindStringSubmatch(rest)
		if (m == nil) != (err != nil) || m != nil && (m[1] != a.AppSlugOrPort || m[2] != a.AgentName || m[3] != a.WorkspaceName || m[4] != a.Username) {
			t.Fatalf("%q: parsed %+v, %v; coderd's regexp: %q", s, a, err, m)
		}
		if err != nil {
			return
		}
		// parse∘format is the identity on accepted input.
		if a.String() != s {
			t.Fatalf("String() = %q, input %q", a.String(), s)
		}
		b, err := ParseSubdomainAppURL(a.String())
		if err != nil || b != a {
			t.Fatalf("reparse: %+v %v", b, err)
		}
		for _, part := range []string{a.AppSlugOrPort, a.AgentName, a.WorkspaceName, a.Username} {
			if part == "" || strings.Contains(part, "--") {
				t.Fatalf("bad part %q in %+v", part, a)
			}
		}
	})
}

func FuzzParsePathApp(f *testing.F) {
	for _, s := range []string{"/@alice/dev.main/apps/code/", "/%40a/b/apps/c", "/@me/x/apps/y/z", "/@a/b/apps/c/%2F..%2F", "/@//apps//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		req, appPath, ok, err := ParsePathApp(p)
		if !ok || err != nil {
			return
		}
		if !strings.HasSuffix(req.BasePath, "/") || (appPath != "" && !strings.HasPrefix(appPath, "/")) {
			t.Fatalf("base %q app path %q", req.BasePath, appPath)
		}
		n := req.Normalize()
		if n.UsernameOrID == "" || n.WorkspaceNameOrID == "" || n.AppSlugOrPort == "" || n.UsernameOrID == "me" {
			t.Fatalf("accepted an unusable request %+v", n)
		}
		if err := n.Check(); err != nil {
			t.Fatalf("accepted request fails Check: %v", err)
		}
		// Formatting the app back into a base path and parsing that gives
		// the same app.
		base := PathAppBasePath(n.UsernameOrID, n.WorkspaceNameOrID, n.AgentNameOrID, n.AppSlugOrPort)
		req2, rest, ok2, err2 := ParsePathApp(base)
		if !ok2 || err2 != nil || rest != "/" {
			t.Fatalf("formatted %q does not parse: ok %v err %v rest %q", base, ok2, err2, rest)
		}
		n2 := req2.Normalize()
		n2.BasePath = n.BasePath
		if n2 != n {
			t.Fatalf("format∘parse: %+v, want %+v (via %q)", n2, n, base)
		}
	})
}

func FuzzHostnamePattern(f *testing.F) {
	f.Add("*.apps.example.com", "a--b--c--d.apps.example.com:80")
	f.Add("*--apps.example.com", "a--b--c--d--apps.example.com.")
	f.Add("*.x.y", "..x.y")
	f.Add("*.x.y", " .x.y")
	f.Add("*.x.y", "  a b .x.y.:80 \t")
	f.Add("*.x.y", "a.x.y:80.")
	f.Add("*.x.y", "a.x.y..")
	f.Fuzz(func(t *testing.T, pattern, host string) {
		p, err := CompileHostnamePattern(pattern)
		if err != nil {
			return
		}
		sub, ok := p.Match(host)
		m := hostMatchRE(p.Suffix()).FindStringSubmatch(host)
		if (m != nil) != ok || ok && m[1] != sub {
			t.Fatalf("%q ~ %q: matched %v %q; coderd's regexp: %q", host, pattern, ok, sub, m)
		}
		if !ok {
			return
		}
		if sub == "" || strings.Contains(sub, ".") {
			t.Fatalf("subdomain %q from %q ~ %q", sub, host, pattern)
		}
		// Formatting the subdomain back into the pattern matches again.
		if sub2, ok2 := p.Match(sub + p.Suffix()); !ok2 || sub2 != sub {
			t.Fatalf("reformatted %q does not match %q", sub+p.Suffix(), pattern)
		}
	})
}
