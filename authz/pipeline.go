package authz

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

// Service runs the Check pipeline. It holds no per-user state: everything
// it knows about a user comes from the request and the primary.
type Service struct {
	cfg      *compiled
	verifier *tokens.Verifier
	issuer   issuer
	log      *slog.Logger
	now      func() time.Time
	// checks bounds concurrent Check calls (Limits.Checks).
	checks slots
}

// Options wires a Service to its collaborators.
type Options struct {
	Config Config
	// Keys verifies app tokens and decrypts smuggled keys (the primary
	// client's key cache).
	Keys   tokens.KeySource
	Issuer Issuer
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Limits bound in-flight work; zero fields take the defaults.
	Limits Limits
}

// New builds a Service.
func New(opts Options) (*Service, error) {
	cfg, err := compile(opts.Config)
	if err != nil {
		return nil, err
	}
	limits, err := opts.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.Keys == nil {
		return nil, errors.New("authz: a key source is required")
	}
	if opts.Issuer == nil {
		return nil, errNoIssuer
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		cfg:      cfg,
		verifier: &tokens.Verifier{Keys: opts.Keys, Now: now},
		issuer:   issuer{upstream: opts.Issuer, now: now, calls: newSlots(limits.IssueCalls)},
		log:      log,
		now:      now,
		checks:   newSlots(limits.Checks),
	}, nil
}

// Check decides one request. Beyond Limits.Checks calls in flight it
// answers 503 at once.
func (s *Service) Check(ctx context.Context, in *Input) Decision {
	if !s.checks.take() {
		return s.overloaded(in, "shed_checks")
	}
	defer s.checks.release()
	t, d := s.classify(in)
	if d != nil {
		return *d
	}
	if d := s.handleSmuggledKey(ctx, in, t); d != nil {
		return *d
	}
	if tok, raw, ok := s.findToken(ctx, in, t); ok {
		return s.allow(in, tok, raw, false)
	}
	tok, raw, d := s.issueToken(ctx, in, t)
	if d != nil {
		return *d
	}
	return s.allow(in, tok, raw, true)
}

// issueToken asks the primary for a token and checks what comes back.
func (s *Service) issueToken(ctx context.Context, in *Input, t *target) (tokens.SignedToken, string, *Decision) {
	if err := t.req.Check(); err != nil {
		d := s.internalError(in, "Invalid app request: "+err.Error(), "invalid_request")
		return tokens.SignedToken{}, "", &d
	}
	ictx, cancel := beforeDeadline(ctx)
	defer cancel()
	res, err := s.issuer.issue(ictx, IssueRequest{
		AppRequest:     t.req,
		PathAppBaseURL: s.cfg.AccessURL.String(),
		AppHostname:    s.cfg.WildcardHostname,
		AppPath:        t.appPath,
		AppQuery:       in.RawQuery(),
		SessionToken:   s.sessionToken(in, t),
		ClientIP:       s.clientIP(in).String(),
	})
	if errors.Is(err, errIssueBusy) {
		d := s.overloaded(in, "shed_issue")
		return tokens.SignedToken{}, "", &d
	}
	if err != nil {
		s.log.Warn("issue signed app token failed", "request_id", in.RequestID, "error", err)
		d := s.badGateway(in)
		return tokens.SignedToken{}, "", &d
	}
	if res.Relay != nil {
		d := relayDecision(res.Relay)
		return tokens.SignedToken{}, "", &d
	}
	tok, err := s.verifier.VerifyToken(ctx, res.Token)
	if err != nil {
		s.log.Error("newly issued token does not verify", "request_id", in.RequestID, "error", err)
		d := s.internalError(in, "Failed to verify newly generated signed token.", "issued_token_invalid")
		return tokens.SignedToken{}, "", &d
	}
	if !tok.MatchesRequest(t.req) {
		s.log.Error("newly issued token does not match the request", "request_id", in.RequestID)
		d := s.internalError(in, "Newly generated signed token does not match the request.", "issued_token_mismatch")
		return tokens.SignedToken{}, "", &d
	}
	return tok, res.Token, nil
}

// answerMargin is how long before the caller's deadline (Envoy's
// ext_authz timeout, carried as the gRPC deadline) authz stops waiting for
// the primary, so that a slow primary gets the browser the 502 page
// rather than Envoy's empty status_on_error answer. The issue call itself
// goes on (single-flight, issueTimeout) for whoever asks next.
const answerMargin = 250 * time.Millisecond

func beforeDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	margin := answerMargin
	if left := time.Until(dl); left/4 < margin {
		margin = left / 4
	}
	return context.WithDeadline(ctx, dl.Add(-margin))
}

// allow forwards the request to the dialer with the verified token.
func (s *Service) allow(in *Input, tok tokens.SignedToken, raw string, issued bool) Decision {
	d := Decision{
		Allow:          true,
		UpstreamHeader: http.Header{},
		ResponseHeader: http.Header{},
		Outcome:        "allow_cookie",
	}
	d.UpstreamHeader.Set(AppTokenHeader, raw)
	if lines := in.Header.Values("Cookie"); len(lines) > 0 {
		stripped := tokens.StripCoderCookies(strings.Join(lines, "; "))
		if stripped == "" {
			d.UpstreamRemove = append(d.UpstreamRemove, "Cookie")
		} else {
			d.UpstreamHeader.Set("Cookie", stripped)
		}
	}
	if issued {
		d.Outcome = "allow_issued"
		d.ResponseHeader.Add("Set-Cookie", s.cfg.Cookies.SignedTokenCookie(raw, tok.Request.BasePath, tok.Expiry).String())
	}
	app := tok.Request.AppSlugOrPort
	cors := tok.CORSBehavior
	if cors == "" {
		cors = "simple"
	}
	d.Metadata = map[string]string{
		MetaUserID:       tok.UserID.String(),
		MetaWorkspaceID:  tok.WorkspaceID.String(),
		MetaAgentID:      tok.AgentID.String(),
		MetaApp:          app,
		MetaAccessMethod: string(tok.Request.AccessMethod),
		MetaCORSBehavior: cors,
		MetaRateLimitKey: tok.UserID.String(),
	}
	return d
}

func (s *Service) internalError(in *Input, detail, outcome string) Decision {
	if !in.wantsHTML() {
		return denyJSON(http.StatusInternalServerError, jsonResponse{Message: "Internal server error", Detail: detail}, outcome)
	}
	return renderPage(errorPage{
		Status:       http.StatusInternalServerError,
		Title:        "Internal Server Error",
		Description:  detail,
		DashboardURL: s.cfg.DashboardURL.String(),
		RetryEnabled: true,
	}, outcome)
}

func (s *Service) badGateway(in *Input) Decision {
	const detail = "The proxy could not reach the Coder primary to authorize this request. Try again shortly."
	if !in.wantsHTML() {
		return denyJSON(http.StatusBadGateway, jsonResponse{Message: "Bad Gateway", Detail: detail}, "primary_unreachable")
	}
	return renderPage(errorPage{
		Status:       http.StatusBadGateway,
		Title:        "Bad Gateway",
		Description:  detail,
		DashboardURL: s.cfg.DashboardURL.String(),
		RetryEnabled: true,
	}, "primary_unreachable")
}

// clientIP is the browser's address as far as trusted hops tell.
func (s *Service) clientIP(in *Input) netip.Addr {
	if v := in.Header.Get("X-Envoy-External-Address"); v != "" {
		if a, err := netip.ParseAddr(strings.TrimSpace(v)); err == nil {
			return a
		}
	}
	if xff := in.Header.Get("X-Forwarded-For"); xff != "" {
		parts := strings.Split(xff, ",")
		i := len(parts) - 1 - s.cfg.XFFTrustedHops
		if i >= 0 {
			if a, err := netip.ParseAddr(strings.TrimSpace(parts[i])); err == nil {
				return a
			}
		}
	}
	return in.Peer
}
