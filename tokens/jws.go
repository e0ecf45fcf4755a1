package tokens

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
)

// TokenLifetime is how long coderd's signed app tokens live.
const TokenLifetime = time.Minute

// leeway is go-jose's default time leeway, which coderd applies.
const leeway = jwt.DefaultLeeway

// MaxTokenLen bounds the JOSE input this package parses at all.
const MaxTokenLen = 16 << 10

// Token errors; every failure wraps one of them.
var (
	ErrMalformed  = errors.New("malformed token")
	ErrTooLarge   = errors.New("token too large")
	ErrAlgorithm  = errors.New("unexpected token algorithm")
	ErrMissingKID = errors.New("token has no kid")
	ErrSignature  = errors.New("token signature or encryption does not verify")
	ErrExpired    = errors.New("token expired or not yet valid")
	ErrClaims     = errors.New("token claims are invalid")
)

// SignedToken is the payload of a signed app token: which app request it
// authorises and what coderd resolved it to.
type SignedToken struct {
	Request appurl.Request
	// UserID is the workspace owner (not the visitor).
	UserID       uuid.UUID
	WorkspaceID  uuid.UUID
	AgentID      uuid.UUID
	AppURL       string
	CORSBehavior string
	Expiry       time.Time
}

// tokenClaims is the token's JSON as coderd writes it: registered claims
// flattened at the top level (only exp is set), the request nested.
type tokenClaims struct {
	jwt.Claims
	Request      appurl.Request `json:"request"`
	UserID       uuid.UUID      `json:"user_id"`
	WorkspaceID  uuid.UUID      `json:"workspace_id"`
	AgentID      uuid.UUID      `json:"agent_id"`
	AppURL       string         `json:"app_url"`
	CORSBehavior string         `json:"cors_behavior"`
}

// MatchesRequest binds a token to a request (docs/protocol.md#token-lookup-and-matching): all seven
// fields equal, base paths compared with a trailing "/".
func (t SignedToken) MatchesRequest(r appurl.Request) bool {
	a, b := t.Request.Normalize(), r.Normalize()
	return a.AccessMethod == b.AccessMethod &&
		a.BasePath == b.BasePath &&
		a.Prefix == b.Prefix &&
		a.UsernameOrID == b.UsernameOrID &&
		a.WorkspaceNameOrID == b.WorkspaceNameOrID &&
		a.AgentNameOrID == b.AgentNameOrID &&
		a.AppSlugOrPort == b.AppSlugOrPort
}

// SignToken signs a token with an app-token key, as coderd does: compact
// JWS, HS512, kid = key sequence. A zero Expiry is an error.
func SignToken(key Key, t SignedToken) (string, error) {
	if key.Feature != FeatureAppToken {
		return "", fmt.Errorf("sign token: %w: key is for %s", ErrBadKey, key.Feature)
	}
	if t.Expiry.IsZero() {
		return "", fmt.Errorf("sign token: %w: no expiry", ErrClaims)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS512, Key: key.Secret},
		(&jose.SignerOptions{}).WithHeader("kid", key.KID()))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	payload, err := json.Marshal(tokenClaims{
		Claims:       jwt.Claims{Expiry: jwt.NewNumericDate(t.Expiry)},
		Request:      t.Request,
		UserID:       t.UserID,
		WorkspaceID:  t.WorkspaceID,
		AgentID:      t.AgentID,
		AppURL:       t.AppURL,
		CORSBehavior: t.CORSBehavior,
	})
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return obj.CompactSerialize()
}

// Verifier checks tokens against keys from a KeySource.
type Verifier struct {
	Keys KeySource
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	cache verifiedCache
}

func (v *Verifier) now() time.Time {
	if v.Now == nil {
		return time.Now()
	}
	return v.Now()
}

// VerifyToken parses and verifies a signed app token: compact JWS, HS512
// only, a kid naming a usable app-token key, a valid signature, exp
// present and within leeway, and a well-formed request.
func (v *Verifier) VerifyToken(ctx context.Context, s string) (SignedToken, error) {
	if len(s) > MaxTokenLen {
		return SignedToken{}, fmt.Errorf("verify token: %w: %d bytes", ErrTooLarge, len(s))
	}
	now := v.now()
	if e, ok := v.cache.get(s, now); ok {
		// The key must still be there, with the same secret: the source
		// answers from memory (a withdrawn kid costs at most one
		// rate-limited refetch of the primary's keys).
		key, err := v.Keys.VerifyingKey(ctx, FeatureAppToken, e.kid)
		if err == nil && bytes.Equal(key.Secret, e.secret) {
			return e.tok, nil
		}
		v.cache.drop(s)
	}
	e, err := v.verify(ctx, s, now)
	if err != nil {
		return SignedToken{}, err
	}
	v.cache.put(s, e, now)
	return e.tok, nil
}

// verify is VerifyToken without the cache; the result says how long it
// may be remembered.
func (v *Verifier) verify(ctx context.Context, s string, now time.Time) (cachedToken, error) {
	obj, err := jose.ParseSignedCompact(s, []jose.SignatureAlgorithm{jose.HS512})
	if err != nil {
		if isAlgError(err) {
			return cachedToken{}, fmt.Errorf("verify token: %w: %v", ErrAlgorithm, err)
		}
		return cachedToken{}, fmt.Errorf("verify token: %w: %v", ErrMalformed, err)
	}
	if len(obj.Signatures) != 1 {
		return cachedToken{}, fmt.Errorf("verify token: %w: %d signatures", ErrMalformed, len(obj.Signatures))
	}
	h := obj.Signatures[0].Protected
	if h.Algorithm != string(jose.HS512) {
		return cachedToken{}, fmt.Errorf("verify token: %w: %q", ErrAlgorithm, h.Algorithm)
	}
	if h.KeyID == "" {
		return cachedToken{}, fmt.Errorf("verify token: %w", ErrMissingKID)
	}
	key, err := v.Keys.VerifyingKey(ctx, FeatureAppToken, h.KeyID)
	if err != nil {
		return cachedToken{}, fmt.Errorf("verify token: %w", err)
	}
	payload, err := obj.Verify(key.Secret)
	if err != nil {
		return cachedToken{}, fmt.Errorf("verify token: %w", ErrSignature)
	}
	// The claims are decoded with the JSON v2 decoder: the same result as
	// encoding/json for what coderd writes, at about a third of the cost,
	// and stricter (duplicate names and invalid UTF-8 are errors).
	var c tokenClaims
	if err := jsonv2.Unmarshal(payload, &c); err != nil {
		return cachedToken{}, fmt.Errorf("verify token: %w: %v", ErrClaims, err)
	}
	if c.Expiry == nil {
		return cachedToken{}, fmt.Errorf("verify token: %w: no exp", ErrClaims)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Time: now}, leeway); err != nil {
		return cachedToken{}, fmt.Errorf("verify token: %w: %v", ErrExpired, err)
	}
	req := c.Request.Normalize()
	if err := req.Check(); err != nil {
		return cachedToken{}, fmt.Errorf("verify token: %w: %v", ErrClaims, err)
	}
	tok := SignedToken{
		Request:      req,
		UserID:       c.UserID,
		WorkspaceID:  c.WorkspaceID,
		AgentID:      c.AgentID,
		AppURL:       c.AppURL,
		CORSBehavior: c.CORSBehavior,
		Expiry:       c.Expiry.Time(),
	}
	until := tok.Expiry.Add(leeway)
	if !key.DeletesAt.IsZero() && key.DeletesAt.Before(until) {
		until = key.DeletesAt
	}
	return cachedToken{tok: tok, until: until, kid: h.KeyID, secret: key.Secret}, nil
}

// isAlgError reports whether go-jose refused the token's algorithm.
func isAlgError(err error) bool {
	var e *jose.ErrUnexpectedSignatureAlgorithm
	return errors.As(err, &e)
}
