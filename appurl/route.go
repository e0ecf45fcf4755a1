// This file decides what a request on the proxy asks for — a path app, a
// subdomain app, a web terminal, the logout subdomain or nothing of ours —
// from its Host and path alone. authz and the dialer both use it, so the
// dialer can check that the token it was handed is for the very request it
// is serving.

package appurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Kind is what a request is.
type Kind int

const (
	// KindNone is not an app request: health, buildinfo, unknown paths.
	KindNone Kind = iota
	KindPathApp
	KindSubdomainApp
	KindTerminal
	// KindLogout is the deprecated coder-logout subdomain.
	KindLogout
)

func (k Kind) String() string {
	switch k {
	case KindPathApp:
		return "path"
	case KindSubdomainApp:
		return "subdomain"
	case KindTerminal:
		return "terminal"
	case KindLogout:
		return "logout"
	}
	return "none"
}

// Route is a classified request.
type Route struct {
	Kind    Kind
	Request Request
	// AppPath is the escaped path beneath the app's base path.
	AppPath string
}

// Errors for requests that are app requests but malformed. Callers answer
// them with Coder's pages.
var (
	ErrMissingHost = errors.New("could not determine request host")
)

// InvalidAppURLError is a subdomain or path that looks like an app URL but
// does not parse.
type InvalidAppURLError struct {
	Kind Kind
	Err  error
}

func (e *InvalidAppURLError) Error() string {
	return fmt.Sprintf("invalid %s application URL: %v", e.Kind, e.Err)
}

func (e *InvalidAppURLError) Unwrap() error { return e.Err }

// Router holds the proxy's hostnames.
type Router struct {
	// Wildcard is the subdomain-app pattern; nil disables subdomain apps.
	Wildcard *HostnamePattern
	// AccessHost and DashboardHost are lower-case hostnames without port.
	AccessHost    string
	DashboardHost string
}

// Route classifies a request by its host and escaped path (no query).
func (rt *Router) Route(host, escapedPath string) (Route, error) {
	if host == "" {
		return Route{}, ErrMissingHost
	}
	if r, ok, err := rt.subdomain(host, escapedPath); ok {
		return r, err
	}
	if agentID, ok := ParseTerminalPath(escapedPath); ok {
		return Route{Kind: KindTerminal, Request: Request{
			AccessMethod:  AccessMethodTerminal,
			BasePath:      escapedPath,
			AgentNameOrID: agentID,
		}.Normalize()}, nil
	}
	req, appPath, ok, err := ParsePathApp(escapedPath)
	if !ok {
		return Route{}, nil
	}
	if err != nil {
		if errors.Is(err, ErrMeUsername) {
			return Route{Kind: KindPathApp}, ErrMeUsername
		}
		return Route{Kind: KindPathApp}, &InvalidAppURLError{Kind: KindPathApp, Err: err}
	}
	return Route{Kind: KindPathApp, Request: req.Normalize(), AppPath: appPath}, nil
}

// IsAppHost reports whether host is a subdomain-app host, one the
// wildcard pattern matches (the logout host and malformed app names
// included): Coder's subdomain-app handler answers such a host whatever
// the path.
func (rt *Router) IsAppHost(host string) bool {
	_, ok := rt.appSubdomain(host)
	return ok
}

// appSubdomain is the part of host the wildcard matched, if host is a
// subdomain-app host.
func (rt *Router) appSubdomain(host string) (string, bool) {
	if rt.Wildcard == nil {
		return "", false
	}
	norm := NormalizeHost(host)
	if norm == rt.AccessHost || norm == rt.DashboardHost || !strings.Contains(norm, ".") {
		return "", false
	}
	return rt.Wildcard.Match(strings.ToLower(host))
}

// subdomain reports ok=false when host is not a subdomain-app host.
func (rt *Router) subdomain(host, escapedPath string) (Route, bool, error) {
	sub, ok := rt.appSubdomain(host)
	if !ok {
		return Route{}, false, nil
	}
	if sub == LogoutSubdomain {
		return Route{Kind: KindLogout}, true, nil
	}
	app, err := ParseSubdomainAppURL(sub)
	if err != nil {
		return Route{Kind: KindSubdomainApp}, true, &InvalidAppURLError{Kind: KindSubdomainApp, Err: err}
	}
	return Route{
		Kind: KindSubdomainApp,
		Request: Request{
			AccessMethod:      AccessMethodSubdomain,
			BasePath:          "/",
			Prefix:            app.Prefix,
			UsernameOrID:      app.Username,
			WorkspaceNameOrID: app.WorkspaceName,
			AgentNameOrID:     app.AgentName,
			AppSlugOrPort:     app.AppSlugOrPort,
		}.Normalize(),
		AppPath: escapedPath,
	}, true, nil
}

// NormalizeHost lower-cases a host and drops its port and surrounding
// dots, for comparing hostnames.
func NormalizeHost(host string) string {
	h := host
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i >= 0 {
			h = h[1:i]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	return strings.Trim(strings.ToLower(h), ".")
}

// NewRouter builds the router of a proxy from its access URL, the
// primary's (dashboard) URL and its wildcard hostname ("" disables
// subdomain apps).
func NewRouter(accessURL, dashboardURL *url.URL, wildcardHostname string) (Router, error) {
	if accessURL == nil || accessURL.Host == "" {
		return Router{}, errors.New("appurl: access URL is required")
	}
	if dashboardURL == nil || dashboardURL.Host == "" {
		return Router{}, errors.New("appurl: dashboard (primary) URL is required")
	}
	rt := Router{AccessHost: NormalizeHost(accessURL.Host), DashboardHost: NormalizeHost(dashboardURL.Host)}
	if wildcardHostname != "" {
		p, err := CompileHostnamePattern(wildcardHostname)
		if err != nil {
			return Router{}, fmt.Errorf("appurl: %w", err)
		}
		rt.Wildcard = p
	}
	return rt, nil
}
