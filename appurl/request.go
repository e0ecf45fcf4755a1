// Package appurl reads and writes Coder's workspace-app URL grammar: the
// app request object, path-app routes, terminal routes, subdomain-app
// hostnames and the wildcard hostname pattern. Everything here is a pure
// function over strings: no HTTP servers, no Envoy, no gRPC.
package appurl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// AccessMethod is how an app is reached.
type AccessMethod string

const (
	AccessMethodPath      AccessMethod = "path"
	AccessMethodSubdomain AccessMethod = "subdomain"
	AccessMethodTerminal  AccessMethod = "terminal"
)

// Request is the app a request asks for, coderd's workspaceapps.Request.
// The JSON names are coderd's: this object travels inside signed tokens
// and issue calls.
type Request struct {
	AccessMethod AccessMethod `json:"access_method"`
	// BasePath is the path the app is mounted at; it ends with "/" once
	// normalised.
	BasePath string `json:"base_path"`
	// Prefix is the optional "<prefix>---" of a subdomain app.
	Prefix       string `json:"app_prefix"`
	UsernameOrID string `json:"username_or_id"`
	// WorkspaceAndAgent is "workspace" or "workspace.agent" as a path app
	// spells it; Normalize splits it. It is never serialised.
	WorkspaceAndAgent string `json:"-"`
	WorkspaceNameOrID string `json:"workspace_name_or_id"`
	AgentNameOrID     string `json:"agent_name_or_id"`
	AppSlugOrPort     string `json:"app_slug_or_port"`
}

// Normalize splits WorkspaceAndAgent at its first "." and makes BasePath
// end with "/".
func (r Request) Normalize() Request {
	req := r
	if req.WorkspaceAndAgent != "" {
		ws, agent, _ := strings.Cut(req.WorkspaceAndAgent, ".")
		req.WorkspaceNameOrID = ws
		req.AgentNameOrID = agent
		req.WorkspaceAndAgent = ""
	}
	if !strings.HasSuffix(req.BasePath, "/") {
		req.BasePath += "/"
	}
	return req
}

// ErrInvalidRequest wraps every reason Check refuses a request.
var ErrInvalidRequest = errors.New("invalid app request")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
}

// Check reports whether a (normalised) request is well formed, with
// coderd's rules; coderd treats a failure as a proxy bug (500).
func (r Request) Check() error {
	switch r.AccessMethod {
	case AccessMethodPath, AccessMethodSubdomain, AccessMethodTerminal:
	default:
		return invalid("invalid access method %q", r.AccessMethod)
	}
	if r.BasePath == "" {
		return invalid("base path is required")
	}
	if r.AccessMethod == AccessMethodTerminal {
		if r.UsernameOrID != "" || r.WorkspaceAndAgent != "" || r.WorkspaceNameOrID != "" || r.AppSlugOrPort != "" || r.Prefix != "" {
			return invalid("dev terminal requests may only specify an agent")
		}
		if r.AgentNameOrID == "" {
			return invalid("agent name or ID is required")
		}
		if _, err := uuid.Parse(r.AgentNameOrID); err != nil {
			return invalid("agent name or ID must be a UUID for terminal requests")
		}
		return nil
	}
	if r.UsernameOrID == "" {
		return invalid("username or ID is required")
	}
	if r.UsernameOrID == "me" {
		return invalid(`username cannot be "me" in app requests`)
	}
	if r.WorkspaceAndAgent != "" {
		return invalid("workspace and agent must be split before checking (call Normalize)")
	}
	if r.WorkspaceNameOrID == "" {
		return invalid("workspace name or ID is required")
	}
	if r.AppSlugOrPort == "" {
		return invalid("app slug or port is required")
	}
	if r.Prefix != "" && r.AccessMethod != AccessMethodSubdomain {
		return invalid("prefix is only valid for subdomain apps")
	}
	if r.Prefix != "" && !strings.HasSuffix(r.Prefix, "---") {
		return invalid(`prefix must end with "---"`)
	}
	return nil
}
