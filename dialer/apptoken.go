package dialer

import (
	"errors"
	"net/http"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

// Why a request's app token was refused.
var (
	ErrNoAppToken        = errors.New("no app token")
	ErrAppTokenInvalid   = errors.New("app token does not verify")
	ErrAppTokenMismatch  = errors.New("app token is for another request")
	ErrAppTokenNoAgent   = errors.New("app token names no agent")
	errTooManyAppTokens  = errors.New("more than one app token header")
	appTokenRefusedTitle = "Missing or invalid app token."
)

// appToken reads, verifies and matches the token authz attached to the
// request. Only a token signed by a current key and issued for the very
// request being served is accepted.
func (s *Server) appToken(r *http.Request, rt appurl.Route) (tokens.SignedToken, error) {
	vals := r.Header.Values(edgewire.AppTokenHeader)
	switch {
	case len(vals) == 0 || vals[0] == "":
		return tokens.SignedToken{}, ErrNoAppToken
	case len(vals) > 1:
		return tokens.SignedToken{}, errTooManyAppTokens
	}
	tok, err := s.verifier.VerifyToken(r.Context(), vals[0])
	if err != nil {
		return tokens.SignedToken{}, errors.Join(ErrAppTokenInvalid, err)
	}
	if !tok.MatchesRequest(rt.Request) {
		return tokens.SignedToken{}, ErrAppTokenMismatch
	}
	if tok.AgentID == [16]byte{} {
		return tokens.SignedToken{}, ErrAppTokenNoAgent
	}
	return tok, nil
}

// refuseToken answers a request whose token was refused. Envoy only
// forwards requests authz allowed, so this is a misconfiguration or an
// attempt to reach the dialer directly: 401, nothing forwarded.
func (s *Server) refuseToken(w http.ResponseWriter, r *http.Request, err error) {
	s.metrics.tokenRefused.WithLabelValues(tokenRefusalReason(err)).Inc()
	s.log.Warn("dialer: refused app token", "reason", tokenRefusalReason(err), "error", err,
		"host", r.Host, "path", r.URL.Path, "remote", r.RemoteAddr, "request_id", requestID(r.Context()))
	coderhttp.WriteJSON(w, http.StatusUnauthorized, coderhttp.Response{
		Message: appTokenRefusedTitle,
		Detail:  tokenRefusalReason(err),
	})
}

// tokenRefusalReason is a bounded label for a refusal.
func tokenRefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrNoAppToken), errors.Is(err, errTooManyAppTokens):
		return "missing"
	case errors.Is(err, tokens.ErrExpired):
		return "expired"
	case errors.Is(err, ErrAppTokenMismatch):
		return "mismatch"
	case errors.Is(err, ErrAppTokenNoAgent):
		return "no_agent"
	}
	return "invalid"
}
