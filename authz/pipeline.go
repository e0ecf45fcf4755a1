package authz

import "context"

// Check decides one request (decide). An answer for the browser carries
// what Coder's proxy puts on its own answers (proxyHeaders).
func (s *Service) Check(ctx context.Context, in *Input) Decision {
	d := s.decide(ctx, in)
	if !d.Allow {
		s.proxyHeaders(in, &d)
	}
	return d
}

// decide reads top to bottom: each step either answers (a non-nil
// Decision) or hands the request on. Beyond Limits.Checks calls in flight
// it answers 503 at once.
func (s *Service) decide(ctx context.Context, in *Input) Decision {
	if !s.checks.take() {
		return s.overloaded(in, "shed_checks")
	}
	defer s.checks.release()
	// 1. Classify: which app, or an answer without any token work.
	t, d := s.classify(in)
	if d != nil {
		return *d
	}
	// 2. Smuggled API key: the login hand-off sets the session cookie.
	if d := s.handleSmuggledKey(ctx, in, t); d != nil {
		return *d
	}
	// 3. Token: a signed app token the request carries that verifies and
	// matches it.
	if tok, raw, ok := s.findToken(ctx, in, t); ok {
		return s.allow(in, tok, raw, false)
	}
	// 4. Issue: ask the primary, which may answer for the browser instead.
	tok, raw, d := s.issueToken(ctx, in, t)
	if d != nil {
		return *d
	}
	// 5. Allow with the new token (and its cookie).
	return s.allow(in, tok, raw, true)
}
