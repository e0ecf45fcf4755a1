package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// IssueRequest is what authz asks the primary to authorise (coderd's
// IssueTokenRequest plus the client IP it forwards).
type IssueRequest struct {
	AppRequest     appurl.Request
	PathAppBaseURL string
	AppHostname    string
	AppPath        string
	AppQuery       string
	SessionToken   string
	ClientIP       string
}

// IssueResult is the primary's answer: a signed token on 201, otherwise
// the complete response to relay to the browser verbatim.
type IssueResult struct {
	Token string
	Relay *RelayedResponse
}

// RelayedResponse is a non-201 answer of the primary.
type RelayedResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// Issuer obtains signed app tokens from the primary.
type Issuer interface {
	Issue(ctx context.Context, req IssueRequest) (IssueResult, error)
}

// issueTimeout bounds one issue call, independently of the Envoy request
// that started it: a single flight serves every waiter, so it must not die
// with the first caller.
const issueTimeout = 10 * time.Second

// issuedReuse is how long a token issued for a signed-in session is
// handed to further requests of the same session for the same app. A
// burst of requests from a page that has no token cookie yet does not
// arrive all at once: without this, each straggler that misses the flight
// would cost a primary call. It is well inside the token's own lifetime
// (1 min), which bounds how long a revoked session keeps access anyway.
const issuedReuse = 15 * time.Second

// issuedMemoryMax bounds the memory of recently issued tokens.
const issuedMemoryMax = 10000

// issuer single-flights issue calls per (session token, app request), and
// remembers successful answers for signed-in sessions briefly, so a burst
// of requests without a token cookie causes one primary call.
type issuer struct {
	upstream Issuer
	now      func() time.Time
	group    singleflight.Group
	// joined, when set (tests), is called as a request joins a flight.
	joined func()
	// calls bounds concurrent calls to the primary (Limits.IssueCalls): a
	// flight that finds none free fails with errIssueBusy, so a burst of
	// cold requests from many sessions cannot pile up on the primary.
	calls slots

	mu     sync.Mutex
	recent map[string]issued
}

type issued struct {
	token string
	until time.Time
}

func (i *issuer) issue(ctx context.Context, req IssueRequest) (IssueResult, error) {
	key := flightKey(req)
	if tok, ok := i.recall(key); ok {
		return IssueResult{Token: tok}, nil
	}
	ch := i.group.DoChan(key, func() (any, error) {
		if !i.calls.take() {
			return IssueResult{}, errIssueBusy
		}
		defer i.calls.release()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), issueTimeout)
		defer cancel()
		res, err := i.upstream.Issue(ctx, req)
		if err == nil && res.Relay == nil && res.Token != "" && req.SessionToken != "" {
			i.remember(key, res.Token)
		}
		return res, err
	})
	if i.joined != nil {
		i.joined()
	}
	select {
	case <-ctx.Done():
		return IssueResult{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return IssueResult{}, r.Err
		}
		return r.Val.(IssueResult), nil
	}
}

func (i *issuer) recall(key string) (string, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	e, ok := i.recent[key]
	if !ok || !i.now().Before(e.until) {
		return "", false
	}
	return e.token, true
}

func (i *issuer) remember(key, token string) {
	now := i.now()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.recent == nil {
		i.recent = make(map[string]issued)
	}
	if len(i.recent) >= issuedMemoryMax {
		for k, e := range i.recent {
			if !now.Before(e.until) {
				delete(i.recent, k)
			}
		}
		if len(i.recent) >= issuedMemoryMax {
			clear(i.recent)
		}
	}
	i.recent[key] = issued{token: token, until: now.Add(issuedReuse)}
}

// flightKey identifies requests that must get the same answer. Anonymous
// answers are login redirects that name the requested path, so for them
// the path and query are part of the key.
func flightKey(req IssueRequest) string {
	r := req.AppRequest
	var b strings.Builder
	sum := sha256.Sum256([]byte(req.SessionToken))
	b.WriteString(hex.EncodeToString(sum[:]))
	for _, f := range []string{string(r.AccessMethod), r.BasePath, r.Prefix, r.UsernameOrID, r.WorkspaceNameOrID, r.AgentNameOrID, r.AppSlugOrPort} {
		b.WriteByte(0)
		b.WriteString(f)
	}
	if req.SessionToken == "" {
		b.WriteByte(0)
		b.WriteString(req.AppPath)
		b.WriteByte('?')
		b.WriteString(req.AppQuery)
	}
	return b.String()
}

var errNoIssuer = errors.New("authz: no issuer configured")

// issueToken asks the primary for a token and checks what comes back.
func (s *Service) issueToken(ctx context.Context, in *Input, t *target) (tokens.SignedToken, string, *Decision) {
	if err := t.req.Check(); err != nil {
		d := s.internalError(in, "Invalid app request: "+err.Error(), "invalid_request")
		return tokens.SignedToken{}, "", &d
	}
	ctx, span := s.startSpan(ctx, spanIssueToken)
	tok, raw, d, err := s.issueAndVerify(ctx, in, t)
	outcome := "issued"
	if d != nil {
		outcome = d.Outcome
	}
	endSpan(span, outcome, err)
	return tok, raw, d
}

// issueAndVerify is issueToken's work; err is the failure behind a 5xx
// decision, for the span.
func (s *Service) issueAndVerify(ctx context.Context, in *Input, t *target) (tokens.SignedToken, string, *Decision, error) {
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
		return tokens.SignedToken{}, "", &d, nil
	}
	if err != nil {
		s.log.Warn("issue signed app token failed", "request_id", in.RequestID, "error", err)
		d := s.badGateway(in)
		return tokens.SignedToken{}, "", &d, err
	}
	if res.Relay != nil {
		d := s.relay(in, res.Relay)
		return tokens.SignedToken{}, "", &d, nil
	}
	tok, err := s.verifier.VerifyToken(ctx, res.Token)
	if err != nil {
		s.log.Error("newly issued token does not verify", "request_id", in.RequestID, "error", err)
		d := s.internalError(in, "Failed to verify newly generated signed token.", "issued_token_invalid")
		return tokens.SignedToken{}, "", &d, err
	}
	if !tok.MatchesRequest(t.req) {
		s.log.Error("newly issued token does not match the request", "request_id", in.RequestID)
		d := s.internalError(in, "Newly generated signed token does not match the request.", "issued_token_mismatch")
		return tokens.SignedToken{}, "", &d, errIssuedMismatch
	}
	return tok, res.Token, nil, nil
}

var errIssuedMismatch = errors.New("authz: newly issued token does not match the request")

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
