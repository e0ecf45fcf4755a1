package devprimary

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/tokens"
)

// Headers and messages of coderd's auth middlewares.
const (
	proxyTokenHeader      = "Coder-External-Proxy-Token"
	signedOutErrorMessage = "You are signed out or your session has expired. Please sign in again to continue."
	// defaultSessionDuration is coderd's default session lifetime, the cap
	// of app-scoped keys.
	defaultSessionDuration = 24 * time.Hour
)

// API key scopes.
const (
	scopeAll                = "all"
	scopeApplicationConnect = "application_connect"
)

// proxyState is a proxy and what it last registered.
type proxyState struct {
	spec         ProxySpec
	regionSerial int32
	registered   bool
	url          string
	wildcard     string
	derpEnabled  bool
	derpOnly     bool
	version      string
}

// requireProxy is coderd's ExtractWorkspaceProxy: the token is
// "<uuid>:<64-char secret>", compared by SHA-256 in constant time.
func (s *Server) requireProxy(next func(http.ResponseWriter, *http.Request, *proxyState)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get(proxyTokenHeader)
		if tok == "" {
			coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{Message: "Missing required external proxy token"})
			return
		}
		invalid := func(detail string) {
			coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{Message: "Invalid external proxy token", Detail: detail})
		}
		parts := strings.Split(tok, ":")
		if len(parts) != 2 {
			invalid("")
			return
		}
		id, err := uuid.Parse(parts[0])
		if err != nil || len(parts[1]) != 64 {
			invalid("")
			return
		}
		s.mu.Lock()
		p := s.proxies[id]
		s.mu.Unlock()
		if p == nil {
			invalid("Proxy not found.")
			return
		}
		if p.spec.Deleted {
			invalid("Proxy has been deleted.")
			return
		}
		got := sha256.Sum256([]byte(parts[1]))
		want := sha256.Sum256([]byte(p.spec.Secret))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			invalid("Invalid proxy token secret.")
			return
		}
		next(w, r, p)
	})
}

// maxSessions is how many minted keys are kept before expired ones are
// pruned.
const maxSessions = 10000

// session is an API key: a catalog session token, a login session or an
// app-scoped key minted by auth-redirect.
type session struct {
	user  *user
	scope string
	// expires is zero for catalog tokens.
	expires time.Time
}

// authenticate resolves an API key; nil when absent, unknown or expired
// (coderd's optional extraction treats all of these as anonymous).
func (s *Server) authenticate(token string) *session {
	if token == "" {
		return nil
	}
	if u := s.world.sessionTokens[token]; u != nil {
		return &session{user: u, scope: scopeAll}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[token]
	if sess == nil || (!sess.expires.IsZero() && !s.now().Before(sess.expires)) {
		return nil
	}
	return sess
}

const keyAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("devprimary: crypto/rand: %v", err))
	}
	for i := range b {
		b[i] = keyAlphabet[int(b[i])%len(keyAlphabet)]
	}
	return string(b)
}

// mintKey creates an API key in coderd's form "<10-char id>-<22-char
// secret>".
func (s *Server) mintKey(u *user, scope string, expires time.Time) string {
	key := randomString(10) + "-" + randomString(22)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= maxSessions {
		for k, sess := range s.sessions {
			if !now.Before(sess.expires) {
				delete(s.sessions, k)
			}
		}
	}
	s.sessions[key] = &session{user: u, scope: scope, expires: expires}
	return key
}

// requestToken finds an API key on a dashboard request as coderd's
// APITokenFromRequest does: cookie, query parameter, header, bearer.
func requestToken(r *http.Request) string {
	if c, err := r.Cookie(tokens.SessionTokenCookie); err == nil && c.Value != "" {
		return c.Value
	}
	if v := r.URL.Query().Get(tokens.SessionTokenQueryParam); v != "" {
		return v
	}
	if v := r.Header.Get(tokens.SessionTokenHeader); v != "" {
		return v
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}

// requireSession is coderd's required API key extraction answering 401
// JSON; it reports the session or nil after writing the answer.
func (s *Server) requireSession(w http.ResponseWriter, r *http.Request) *session {
	tok := requestToken(r)
	if tok == "" {
		coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{
			Message: signedOutErrorMessage,
			Detail:  fmt.Sprintf("Cookie %q or query parameter must be provided.", tokens.SessionTokenCookie),
		})
		return nil
	}
	sess := s.authenticate(tok)
	if sess == nil {
		coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{Message: signedOutErrorMessage, Detail: "API key is invalid."})
		return nil
	}
	return sess
}

// handleAgentRPC authenticates an agent by its token (coderd's
// ExtractWorkspaceAgent) and serves the tailnet part of its RPC.
func (s *Server) handleAgentRPC(w http.ResponseWriter, r *http.Request) {
	tok := requestToken(r)
	if tok == "" {
		coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{Message: fmt.Sprintf("Cookie %q must be provided.", tokens.SessionTokenCookie)})
		return
	}
	id, err := uuid.Parse(tok)
	if err != nil {
		coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{
			Message: "Workspace agent token invalid.",
			Detail:  fmt.Sprintf("An agent token must be a valid UUIDv4. (len %d)", len(tok)),
		})
		return
	}
	a := s.world.agentsByToken[id]
	if a == nil {
		coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{Message: "Workspace agent not authorized.", Detail: "The agent token is not known to this dev primary."})
		return
	}
	s.coord.ServeAgent(w, r, a.ID)
}
