package authz

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// handleSmuggledKey implements the API-key hand-off (docs/protocol.md#smuggled-api-key): a
// path or subdomain app request carrying the encrypted key parameter is
// answered with the session cookie and a 303 to the same URL without it.
// It returns nil when the request carries no such parameter.
func (s *Service) handleSmuggledKey(ctx context.Context, in *Input, t *target) *Decision {
	if t.req.AccessMethod == appurl.AccessMethodTerminal {
		return nil
	}
	encrypted := in.Query().Get(tokens.SmuggledAPIKeyQueryParam)
	if encrypted == "" {
		return nil
	}
	if t.req.AccessMethod == appurl.AccessMethodPath && appurl.NormalizeHost(t.host) == s.cfg.dashboardHost {
		d := s.page(http.StatusBadRequest, "Bad Request",
			"Could not find a valid API key. Please try again. API key smuggling is not permitted on the primary access URL.",
			"smuggle_on_dashboard")
		return &d
	}
	dctx, span := s.startSpan(ctx, spanDecryptSmuggledKey)
	apiKey, err := s.verifier.DecryptAPIKey(dctx, encrypted)
	if err != nil {
		endSpan(span, "smuggle_bad_key", err)
		s.log.Info("smuggled api key rejected", "request_id", in.RequestID, "error", err)
		d := s.page(http.StatusBadRequest, "Bad Request",
			"Could not decrypt API key. Please remove the query parameter and try again.",
			"smuggle_bad_key")
		return &d
	}
	endSpan(span, "smuggle_cookie_set", nil)
	query := url.Values{}
	for k, v := range in.Query() {
		if k != tokens.SmuggledAPIKeyQueryParam {
			query[k] = v
		}
	}
	location := sameOriginPath(in.EscapedPath())
	if q := query.Encode(); q != "" {
		location += "?" + q
	}
	d := s.handOff(t, apiKey, location)
	return &d
}

// sameOriginPath is the Location for the hand-off redirect. Like coderd
// (net/http's Redirect) it uses the cleaned, decoded path, so "//host/x"
// becomes "/host/x"; it then re-escapes the path and escapes backslashes,
// which browsers would otherwise read as "/" and turn "/\host/x" into a
// protocol-relative URL to another origin.
func sameOriginPath(escapedPath string) string {
	p, err := url.PathUnescape(escapedPath)
	if err != nil {
		p = escapedPath
	}
	if p == "" {
		p = "/"
	}
	trailing := strings.HasSuffix(p, "/")
	p = path.Clean("/" + p)
	if trailing && !strings.HasSuffix(p, "/") {
		p += "/"
	}
	out := (&url.URL{Path: p}).EscapedPath()
	out = strings.ReplaceAll(out, `\`, "%5C")
	// EscapedPath keeps a leading "//" when the path has one; Clean
	// already removed it, but never hand a browser one.
	return "/" + strings.TrimLeft(out, "/")
}
