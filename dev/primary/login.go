package devprimary

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/tokens"
)

// handleAuthRedirect is the dashboard side of the app login hand-off
// (coderd's workspaceApplicationAuth): with a dashboard session it mints
// an application_connect key, encrypts it and sends the browser back to
// redirect_uri with coder_application_connect_api_key_35e783; without one
// it sends the browser to the login page first.
func (s *Server) handleAuthRedirect(w http.ResponseWriter, r *http.Request) {
	sess := s.authenticate(requestToken(r))
	if sess == nil {
		s.redirectToLogin(w, r, nil, signedOutErrorMessage)
		return
	}
	// An application_connect key may not create API keys.
	if sess.scope != scopeAll {
		resourceNotFound(w)
		return
	}
	raw := r.URL.Query().Get("redirect_uri")
	if raw == "" {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Missing redirect_uri query parameter."})
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Invalid redirect_uri query parameter.", Detail: err.Error()})
		return
	}
	u.Scheme = s.redirectScheme(u.Host)
	if u.Scheme == "" {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{
			Message: "Invalid redirect_uri.",
			Detail:  "The redirect_uri query parameter must be the primary wildcard app hostname, a workspace proxy access URL or a workspace proxy wildcard app hostname.",
		})
		return
	}
	now := s.now()
	exp := sess.expires
	if exp.IsZero() || exp.Sub(now) > defaultSessionDuration {
		exp = now.Add(defaultSessionDuration)
	}
	apiKey := s.mintKey(sess.user, scopeApplicationConnect, exp)
	key, err := s.keys.signing(tokens.FeatureAPIKey, now)
	if err != nil {
		coderhttp.WriteJSON(w, http.StatusInternalServerError, coderhttp.Response{Message: "Failed to encrypt API key.", Detail: err.Error()})
		return
	}
	enc, err := tokens.EncryptAPIKey(key, apiKey, now)
	if err != nil {
		coderhttp.WriteJSON(w, http.StatusInternalServerError, coderhttp.Response{Message: "Failed to encrypt API key.", Detail: err.Error()})
		return
	}
	q := u.Query()
	q.Set(tokens.SmuggledAPIKeyQueryParam, enc)
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// redirectScheme is coderd's ValidWorkspaceAppHostname for auth-redirect:
// the primary's own wildcard (scheme of the dashboard), a registered proxy
// access URL host or a registered proxy wildcard (scheme of that proxy's
// access URL); never the dashboard host itself. "" means refused.
func (s *Server) redirectScheme(host string) string {
	if s.appHostname != nil {
		if _, ok := s.appHostname.Match(host); ok {
			return s.opts.AccessURL.Scheme
		}
	}
	return s.proxySchemeFor(host, true, true)
}

func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	renderLoginPage(w, http.StatusOK, loginPage{Message: q.Get("message"), Redirect: safeRedirect(q.Get("redirect"))})
}

// handleLogin checks the demo password and starts a dashboard session:
// cookie coder_session_token (host-only, HttpOnly, Lax) and 303 to the
// redirect target.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		renderLoginPage(w, http.StatusBadRequest, loginPage{Message: "The form could not be read."})
		return
	}
	redirect := safeRedirect(r.PostForm.Get("redirect"))
	u := s.world.userByNameOrID(strings.TrimSpace(r.PostForm.Get("username")))
	if u == nil || u.Password == "" || subtle.ConstantTimeCompare([]byte(u.Password), []byte(r.PostForm.Get("password"))) != 1 {
		renderLoginPage(w, http.StatusUnauthorized, loginPage{Message: "Incorrect username or password.", Redirect: redirect})
		return
	}
	exp := s.now().Add(defaultSessionDuration)
	key := s.mintKey(u, scopeAll, exp)
	http.SetCookie(w, &http.Cookie{
		Name:     tokens.SessionTokenCookie,
		Value:    key,
		Path:     "/",
		Expires:  exp,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   s.opts.AccessURL.Scheme == "https",
	})
	s.log.Info("dev primary login", "user", u.Username)
	http.Redirect(w, r, redirect, http.StatusSeeOther)
}

// LoginURL is the dashboard login page that leads back to target.
func (s *Server) LoginURL(target string) string {
	u := *s.opts.AccessURL
	u.Path = "/login"
	u.RawQuery = url.Values{"redirect": {target}}.Encode()
	return u.String()
}
