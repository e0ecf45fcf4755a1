package tokens

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// API-key payload claims coderd sets and checks.
const (
	apiKeyIssuer   = "coderd"
	apiKeyAudience = "wsproxy"
)

// apiKeyClaims is the smuggled API key's JSON as coderd writes it.
type apiKeyClaims struct {
	jwt.Claims
	APIKey string `json:"api_key"`
}

// EncryptAPIKey encrypts an API key for the login hand-off, as coderd's
// dashboard does: compact JWE, A256GCMKW + A256GCM, DEFLATE, kid = key
// sequence; iss "coderd", aud ["wsproxy"], exp now+1m, nbf now-1m.
func EncryptAPIKey(key Key, apiKey string, now time.Time) (string, error) {
	if key.Feature != FeatureAPIKey {
		return "", fmt.Errorf("encrypt api key: %w: key is for %s", ErrBadKey, key.Feature)
	}
	if apiKey == "" {
		return "", fmt.Errorf("encrypt api key: %w: empty api key", ErrClaims)
	}
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: jose.A256GCMKW, Key: key.Secret, KeyID: key.KID()},
		&jose.EncrypterOptions{Compression: jose.DEFLATE})
	if err != nil {
		return "", fmt.Errorf("encrypt api key: %w", err)
	}
	payload, err := json.Marshal(apiKeyClaims{
		Claims: jwt.Claims{
			Issuer:    apiKeyIssuer,
			Audience:  jwt.Audience{apiKeyAudience},
			Expiry:    jwt.NewNumericDate(now.Add(time.Minute)),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		},
		APIKey: apiKey,
	})
	if err != nil {
		return "", fmt.Errorf("encrypt api key: %w", err)
	}
	obj, err := enc.Encrypt(payload)
	if err != nil {
		return "", fmt.Errorf("encrypt api key: %w", err)
	}
	return obj.CompactSerialize()
}

// DecryptAPIKey undoes EncryptAPIKey: only A256GCMKW/A256GCM, a kid naming
// a usable api-key key, iss "coderd", aud containing "wsproxy", nbf
// present, exp/nbf within leeway.
func (v *Verifier) DecryptAPIKey(ctx context.Context, s string) (string, error) {
	if len(s) > MaxTokenLen {
		return "", fmt.Errorf("decrypt api key: %w: %d bytes", ErrTooLarge, len(s))
	}
	obj, err := jose.ParseEncryptedCompact(s, []jose.KeyAlgorithm{jose.A256GCMKW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return "", fmt.Errorf("decrypt api key: %w: %v", ErrMalformed, err)
	}
	if obj.Header.Algorithm != string(jose.A256GCMKW) {
		return "", fmt.Errorf("decrypt api key: %w: %q", ErrAlgorithm, obj.Header.Algorithm)
	}
	if obj.Header.KeyID == "" {
		return "", fmt.Errorf("decrypt api key: %w", ErrMissingKID)
	}
	key, err := v.Keys.VerifyingKey(ctx, FeatureAPIKey, obj.Header.KeyID)
	if err != nil {
		return "", fmt.Errorf("decrypt api key: %w", err)
	}
	payload, err := obj.Decrypt(key.Secret)
	if err != nil {
		return "", fmt.Errorf("decrypt api key: %w", ErrSignature)
	}
	var c apiKeyClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("decrypt api key: %w: %v", ErrClaims, err)
	}
	if c.NotBefore == nil {
		return "", fmt.Errorf("decrypt api key: %w: no nbf", ErrClaims)
	}
	if c.Issuer != apiKeyIssuer || !slices.Contains(c.Audience, apiKeyAudience) {
		return "", fmt.Errorf("decrypt api key: %w: issuer %q audience %q", ErrClaims, c.Issuer, c.Audience)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Time: v.now()}, leeway); err != nil {
		return "", fmt.Errorf("decrypt api key: %w: %v", ErrExpired, err)
	}
	if c.APIKey == "" {
		return "", fmt.Errorf("decrypt api key: %w: empty api key", ErrClaims)
	}
	return c.APIKey, nil
}
