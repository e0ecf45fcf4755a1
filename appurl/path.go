package appurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/uuid"
)

// Errors of path-app parsing.
var (
	// ErrMeUsername: path apps must name their user; the proxy has no
	// database to resolve "me".
	ErrMeUsername = errors.New("applications must be accessed with the full username, not @me")
	// ErrBadPathEscape is a path-app URL with an invalid %-escape.
	ErrBadPathEscape = errors.New("invalid escape in application path")
	// ErrEmptyPathSegment is a path-app URL with an empty user, workspace
	// or app.
	ErrEmptyPathSegment = errors.New("application path has an empty user, workspace or app")
)

// ParsePathApp reads a path-app route, /@user/workspace[.agent]/apps/app/…
// (also spelled /%40user/…), from an escaped request path. ok is false
// when the path is not a path-app route at all; err is set when it is one
// but unusable. appPath is the decoded rest of the path beneath the app's
// base path: "" when the base path lacks its trailing slash (the dialer
// then redirects), else it starts with "/".
func ParsePathApp(escapedPath string) (req Request, appPath string, ok bool, err error) {
	var userPart string
	switch {
	case strings.HasPrefix(escapedPath, "/@"):
		userPart = escapedPath[2:]
	case len(escapedPath) >= 4 && strings.EqualFold(escapedPath[:4], "/%40"):
		userPart = escapedPath[4:]
	default:
		return Request{}, "", false, nil
	}
	// user / workspace_and_agent / "apps" / app [/ rest]
	parts := strings.SplitN(userPart, "/", 5)
	if len(parts) < 4 || parts[2] != "apps" {
		return Request{}, "", false, nil
	}
	user, ws, app := parts[0], parts[1], parts[3]
	rest := ""
	hasRest := len(parts) == 5
	if hasRest {
		rest = parts[4]
	}
	dec := func(s string) (string, error) {
		v, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("%w: %q", ErrBadPathEscape, s)
		}
		return v, nil
	}
	var errs [3]error
	user, errs[0] = dec(user)
	ws, errs[1] = dec(ws)
	app, errs[2] = dec(app)
	for _, e := range errs {
		if e != nil {
			return Request{}, "", true, e
		}
	}
	req = Request{
		AccessMethod:      AccessMethodPath,
		BasePath:          "/@" + user + "/" + ws + "/apps/" + app + "/",
		UsernameOrID:      user,
		WorkspaceAndAgent: ws,
		AppSlugOrPort:     app,
	}
	if wsName, _, _ := strings.Cut(ws, "."); user == "" || wsName == "" || app == "" {
		// "/@u/.agent/apps/x" names no workspace either.
		return req, "", true, ErrEmptyPathSegment
	}
	if user == "me" {
		return req, "", true, ErrMeUsername
	}
	if hasRest {
		r, err := dec(rest)
		if err != nil {
			return req, "", true, err
		}
		appPath = "/" + r
	}
	return req, appPath, true, nil
}

// TerminalPathPrefix and TerminalPathSuffix frame the web terminal route
// /api/v2/workspaceagents/{agent-id}/pty.
const (
	TerminalPathPrefix = "/api/v2/workspaceagents/"
	TerminalPathSuffix = "/pty"
)

// ParseTerminalPath reads the agent ID from a web-terminal path. It
// accepts only the exact route with a UUID, as the Envoy route does.
func ParseTerminalPath(escapedPath string) (agentID string, ok bool) {
	if !strings.HasPrefix(escapedPath, TerminalPathPrefix) || !strings.HasSuffix(escapedPath, TerminalPathSuffix) {
		return "", false
	}
	id := escapedPath[len(TerminalPathPrefix) : len(escapedPath)-len(TerminalPathSuffix)]
	if len(id) != 36 {
		return "", false
	}
	if _, err := uuid.Parse(id); err != nil {
		return "", false
	}
	return id, true
}

// TerminalPath is the web-terminal path for an agent.
func TerminalPath(agentID uuid.UUID) string {
	return TerminalPathPrefix + agentID.String() + TerminalPathSuffix
}

// PathAppBasePath formats a path app's base path (with trailing "/").
func PathAppBasePath(user, workspace, agent, app string) string {
	wa := workspace
	if agent != "" {
		wa += "." + agent
	}
	return "/@" + url.PathEscape(user) + "/" + url.PathEscape(wa) + "/apps/" + url.PathEscape(app) + "/"
}
