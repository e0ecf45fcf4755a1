package authz

import (
	"context"
	"net/http"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// findToken returns a signed app token from the request that verifies and
// matches it (docs/protocol.md#token-lookup-and-matching).
func (s *Service) findToken(ctx context.Context, in *Input, t *target) (tokens.SignedToken, string, bool) {
	ctx, span := s.startSpan(ctx, spanVerifyToken)
	tok, raw, ok := s.verifier.FindToken(ctx, in.Query(), in.Cookies(), t.req)
	outcome := "none_valid"
	if ok {
		outcome = "valid"
	}
	endSpan(span, outcome, nil)
	return tok, raw, ok
}

// sessionToken finds the user's Coder session token (docs/protocol.md#session-token-sources).
func (s *Service) sessionToken(in *Input, t *target) string {
	name := tokens.PathAppSessionCookie
	if t.req.AccessMethod == appurl.AccessMethodSubdomain {
		name = s.cfg.subdomainCookie
	}
	return tokens.SessionToken(name, in.Cookies(), in.Query(), in.Header)
}

// parseCookies parses every Cookie header line leniently, as a Go server
// would.
func parseCookies(h http.Header) []*http.Cookie {
	if len(h["Cookie"]) == 0 {
		return nil
	}
	r := http.Request{Header: http.Header{"Cookie": h["Cookie"]}}
	return r.Cookies()
}
