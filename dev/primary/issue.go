package devprimary

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/tokens"
)

// issueRequest is coderd's workspaceapps.IssueTokenRequest.
type issueRequest struct {
	AppRequest     appurl.Request `json:"app_request"`
	PathAppBaseURL string         `json:"path_app_base_url"`
	AppHostname    string         `json:"app_hostname"`
	AppPath        string         `json:"app_path"`
	AppQuery       string         `json:"app_query"`
	SessionToken   string         `json:"session_token"`
}

// issueResponse is coderd's wsproxysdk.IssueSignedAppTokenResponse.
type issueResponse struct {
	SignedTokenStr string `json:"signed_token_str"`
}

// appBaseURL is coderd's IssueTokenRequest.AppBaseURL: the proxy access
// URL with the base path, or the wildcard with "*" replaced by the app's
// subdomain label.
func (r issueRequest) appBaseURL() (*url.URL, error) {
	u, err := url.Parse(r.PathAppBaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse path app base URL: %w", err)
	}
	switch r.AppRequest.AccessMethod {
	case appurl.AccessMethodPath, appurl.AccessMethodTerminal:
		u.Path = r.AppRequest.BasePath
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		return u, nil
	case appurl.AccessMethodSubdomain:
		if r.AppHostname == "" {
			return nil, errors.New("subdomain app hostname is required to generate subdomain app URL")
		}
		label := appurl.ApplicationURL{
			Prefix:        r.AppRequest.Prefix,
			AppSlugOrPort: r.AppRequest.AppSlugOrPort,
			AgentName:     r.AppRequest.AgentNameOrID,
			WorkspaceName: r.AppRequest.WorkspaceNameOrID,
			Username:      r.AppRequest.UsernameOrID,
		}
		u.Host = label.Hostname(r.AppHostname)
		u.Path = r.AppRequest.BasePath
		return u, nil
	}
	return nil, fmt.Errorf("invalid access method: %q", r.AppRequest.AccessMethod)
}

func (s *Server) handleIssue(w http.ResponseWriter, r *http.Request, _ *proxyState) {
	s.issueCalls.Add(1)
	var req issueRequest
	if !readJSON(w, r, &req) {
		return
	}
	tok, ok := s.issue(w, req)
	if !ok {
		return
	}
	coderhttp.WriteJSON(w, http.StatusCreated, issueResponse{SignedTokenStr: tok})
}

// issue authenticates and authorises an app request with coderd's
// outcomes (docs/protocol.md#issue-outcomes) and signs a token. On failure it has written
// the answer the proxy must relay.
func (s *Server) issue(w http.ResponseWriter, req issueRequest) (string, bool) {
	// coderd answers as if the browser had sent a GET to the base path.
	userReq, err := http.NewRequest(http.MethodGet, req.AppRequest.BasePath, nil)
	if err != nil {
		internalError(w, fmt.Errorf("[DEV ERROR] new request: %w", err))
		return "", false
	}
	appReq := req.AppRequest.Normalize()
	if err := appReq.Check(); err != nil {
		s.log.Warn("workspace app auth server error: invalid app request", "error", err)
		s.writeAppInternalError(w)
		return "", false
	}
	sess := s.authenticate(req.SessionToken)

	res, err := s.world.resolve(appReq)
	switch {
	case errors.Is(err, errNotFound):
		s.log.Debug("workspace app 404", "reason", err)
		s.writeApp404(w, nil)
		return "", false
	case errors.Is(err, errWorkspaceStopped):
		s.writeWorkspaceOffline(w, appReq.UsernameOrID, appReq.WorkspaceNameOrID)
		return "", false
	case err != nil:
		s.log.Warn("workspace app auth server error: get app details", "error", err)
		s.writeAppInternalError(w)
		return "", false
	}
	if appReq.AccessMethod == appurl.AccessMethodPath && s.world.pathAppsDenied {
		s.writeApp404(w, []string{"path-based apps are disabled by the template (path_apps_allowed: false)"})
		return "", false
	}

	authed, warnings := s.authorize(sess, res, appReq.AccessMethod)
	if !authed {
		if sess != nil {
			s.writeApp404(w, warnings)
			return "", false
		}
		if appReq.AccessMethod == appurl.AccessMethodTerminal {
			resourceNotFound(w)
			return "", false
		}
		base, err := req.appBaseURL()
		if err != nil {
			s.log.Warn("workspace app auth server error: get app base URL", "error", err)
			s.writeAppInternalError(w)
			return "", false
		}
		if appReq.AccessMethod == appurl.AccessMethodPath && base.Host == s.opts.AccessURL.Host {
			s.redirectToLogin(w, userReq, s.opts.AccessURL, signedOutErrorMessage)
			return "", false
		}
		http.Redirect(w, userReq, s.authRedirectURL(base, req, res), http.StatusSeeOther)
		return "", false
	}

	if !res.Agent.connected.Load() {
		s.writeAppOffline(w, fmt.Sprintf("Agent state is %q, not %q", "disconnected", "connected"))
		return "", false
	}

	now := s.now()
	key, err := s.keys.signing(tokens.FeatureAppToken, now)
	if err != nil {
		s.writeAppInternalError(w)
		return "", false
	}
	appURL := ""
	if res.AppURL != nil {
		appURL = res.AppURL.String()
	}
	tok, err := tokens.SignToken(key, tokens.SignedToken{
		Request:      appReq,
		UserID:       res.Owner.ID,
		WorkspaceID:  res.Workspace.ID,
		AgentID:      res.Agent.ID,
		AppURL:       appURL,
		CORSBehavior: res.CORSBehavior,
		Expiry:       now.Add(tokens.TokenLifetime),
	})
	if err != nil {
		s.log.Warn("workspace app auth server error: generate token", "error", err)
		s.writeAppInternalError(w)
		return "", false
	}
	return tok, true
}

// authRedirectURL is where an anonymous browser is sent to log in: the
// dashboard's auth-redirect with redirect_uri = the app URL, the user's
// path and query (coderd's quirk: an app URL with its own default query
// replaces a user-supplied one).
func (s *Server) authRedirectURL(base *url.URL, req issueRequest, res *resolved) string {
	redirectURI := *base
	if res.AppURL != nil {
		if req.AppPath != "" {
			redirectURI.Path = path.Join(redirectURI.Path, req.AppPath)
		} else if !strings.HasSuffix(redirectURI.Path, "/") {
			redirectURI.Path += "/"
		}
		q := req.AppQuery
		if q != "" && res.AppURL.RawQuery != "" {
			q = res.AppURL.RawQuery
		}
		redirectURI.RawQuery = q
	}
	u := *s.opts.AccessURL
	u.Path = "/api/v2/applications/auth-redirect"
	q := u.Query()
	q.Add("redirect_uri", redirectURI.String())
	u.RawQuery = q.Encode()
	return u.String()
}

// redirectToLogin is coderd's httpmw.RedirectToLogin: 303 to /login with
// message and redirect (the request's path and query), on the dashboard
// when one is given.
func (s *Server) redirectToLogin(w http.ResponseWriter, r *http.Request, dashboard *url.URL, message string) {
	p := r.URL.Path
	if r.URL.RawQuery != "" {
		p += "?" + r.URL.RawQuery
	}
	q := url.Values{}
	q.Add("message", message)
	q.Add("redirect", p)
	u := &url.URL{Path: "/login", RawQuery: q.Encode()}
	if dashboard != nil {
		d := *dashboard
		d.Path, d.RawQuery = u.Path, u.RawQuery
		u = &d
	}
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// authorize is coderd's authorizeRequest over the catalog: sharing levels,
// path apps forced to "owner" unless the dangerous switch is on, site
// owners kept out of others' owner-level path apps unless the other
// switch is on, app-scoped keys good for apps but not terminals.
func (s *Server) authorize(sess *session, res *resolved, method appurl.AccessMethod) (bool, []string) {
	var warnings []string
	dep := s.world.cat.Deployment
	level := res.SharingLevel
	isPath := method == appurl.AccessMethodPath
	if isPath && !dep.DangerousAllowPathAppSharing {
		if level != SharingOwner {
			warnings = append(warnings, fmt.Sprintf("unable to use configured sharing level %q because path-based app sharing is disabled (see --dangerous-allow-path-app-sharing), using sharing level \"owner\" instead", level))
		}
		level = SharingOwner
	}
	if sess == nil {
		return level == SharingPublic, warnings
	}
	actor := sess.user
	if isPath && level == SharingOwner && res.Workspace.Owner != actor && !dep.DangerousAllowPathAppSiteOwnerAccess {
		if actor.SiteOwner {
			warnings = append(warnings, "path-based apps with \"owner\" share level are only accessible by the workspace owner (see --dangerous-allow-path-app-site-owner-access)")
		}
		return false, warnings
	}
	// The scope of an application_connect key allows app connections but
	// not SSH (terminals).
	scopeOK := sess.scope == scopeAll || method != appurl.AccessMethodTerminal
	if scopeOK && (res.Workspace.Owner == actor || actor.SiteOwner) {
		return true, nil
	}
	switch level {
	case SharingAuthenticated, SharingOrganization:
		// One organization in the dev primary: every user is a member.
		if scopeOK {
			return true, nil
		}
	case SharingPublic:
		return true, nil
	}
	return false, warnings
}

// resolveOwnerRequest/Response are coderd's resolve-app-owner shapes.
type resolveOwnerRequest struct {
	AppRequest appurl.Request `json:"app_request"`
}

type resolveOwnerResponse struct {
	OwnerID uuid.UUID `json:"owner_id"`
}

func (s *Server) handleResolveAppOwner(w http.ResponseWriter, r *http.Request, _ *proxyState) {
	var req resolveOwnerRequest
	if !readJSON(w, r, &req) {
		return
	}
	appReq := req.AppRequest.Normalize()
	if err := appReq.Check(); err != nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Invalid app request.", Detail: err.Error()})
		return
	}
	if appReq.AccessMethod != appurl.AccessMethodSubdomain {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Invalid access method.", Detail: fmt.Sprintf("Only %q requests are supported.", appurl.AccessMethodSubdomain)})
		return
	}
	res, err := s.world.resolve(appReq)
	switch {
	case errors.Is(err, errNotFound):
		coderhttp.WriteJSON(w, http.StatusNotFound, coderhttp.Response{Message: "Application not found.", Detail: err.Error()})
		return
	case errors.Is(err, errWorkspaceStopped):
		// The owner is known even when the workspace is stopped.
		u := s.world.userByNameOrID(appReq.UsernameOrID)
		coderhttp.WriteJSON(w, http.StatusOK, resolveOwnerResponse{OwnerID: u.ID})
		return
	case err != nil:
		internalError(w, err)
		return
	}
	coderhttp.WriteJSON(w, http.StatusOK, resolveOwnerResponse{OwnerID: res.Owner.ID})
}

// ptyTokenRequest/Response are coderd's
// codersdk.IssueReconnectingPTYSignedToken{Request,Response}.
type ptyTokenRequest struct {
	URL     string    `json:"url"`
	AgentID uuid.UUID `json:"agentID"`
}

type ptyTokenResponse struct {
	SignedToken string `json:"signed_token"`
}

func (s *Server) handlePTYToken(w http.ResponseWriter, r *http.Request) {
	sess := s.requireSession(w, r)
	if sess == nil {
		return
	}
	if sess.scope != scopeAll {
		resourceNotFound(w)
		return
	}
	var req ptyTokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	var invalid []coderhttp.ValidationError
	if req.URL == "" {
		invalid = append(invalid, coderhttp.ValidationError{Field: "url", Detail: `Validation failed for tag "required" with value: ""`})
	}
	if req.AgentID == uuid.Nil {
		invalid = append(invalid, coderhttp.ValidationError{Field: "agentID", Detail: fmt.Sprintf(`Validation failed for tag "required" with value: "%s"`, uuid.Nil)})
	}
	if len(invalid) > 0 {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Validation failed.", Validations: invalid})
		return
	}
	u, err := url.Parse(req.URL)
	if err == nil && u.Scheme != "ws" && u.Scheme != "wss" {
		err = fmt.Errorf("invalid URL scheme %q, expected 'ws' or 'wss'", u.Scheme)
	}
	if err != nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Invalid URL.", Detail: err.Error()})
		return
	}
	if u.Path != fmt.Sprintf("/api/v2/workspaceagents/%s/pty", req.AgentID) {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{
			Message: "Invalid URL path.",
			Detail:  "The provided URL is not a valid reconnecting PTY endpoint URL.",
		})
		return
	}
	if s.proxySchemeFor(u.Host, true, false) == "" {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{
			Message: "Invalid hostname in URL.",
			Detail:  "The hostname must be the primary wildcard app hostname, a workspace proxy access URL or a workspace proxy wildcard app hostname.",
		})
		return
	}
	tok, ok := s.issue(w, issueRequest{
		AppRequest: appurl.Request{
			AccessMethod:  appurl.AccessMethodTerminal,
			BasePath:      u.Path,
			AgentNameOrID: req.AgentID.String(),
		},
		SessionToken: requestToken(r),
	})
	if !ok {
		return
	}
	coderhttp.WriteJSON(w, http.StatusOK, ptyTokenResponse{SignedToken: tok})
}

// proxySchemeFor is coderd's proxy lookup by hostname
// (GetWorkspaceProxyByHostname): the port is stripped, the rest must be
// [a-zA-Z0-9._-]+, and it must equal a registered proxy's access URL host
// or end with its wildcard's suffix (the SQL's LIKE with "*" as "%",
// case-sensitive). A port on the wildcard is ignored too. The result is
// the matching proxy's access URL scheme; "" means none.
func (s *Server) proxySchemeFor(host string, allowAccessURL, allowWildcard bool) string {
	host = hostOnly(host)
	if !hostnameChars.MatchString(host) {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.order {
		p := s.proxies[id]
		if !p.registered || p.spec.Deleted {
			continue
		}
		u, err := url.Parse(p.url)
		if err != nil {
			continue
		}
		if allowAccessURL && u.Hostname() == host {
			return u.Scheme
		}
		if allowWildcard && p.wildcard != "" {
			suffix := hostOnly(p.wildcard)[1:]
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return u.Scheme
			}
		}
	}
	return ""
}

var hostnameChars = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)
