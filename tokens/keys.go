// Package tokens reads and writes the credentials coderd hands a
// workspace proxy, byte-compatible with coderd: the crypto keys per
// feature, the signed app token (JWS HS512), the smuggled API key (JWE
// A256GCMKW/A256GCM), and the names and attributes of Coder's cookies.
// Everything here is a pure function over our own types.
package tokens

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// Feature is the purpose a crypto key serves (coderd's CryptoKeyFeature).
type Feature string

const (
	// FeatureAppToken keys sign app tokens (HMAC, 64-byte secrets).
	FeatureAppToken Feature = "workspace_apps_token"
	// FeatureAPIKey keys wrap the smuggled API key (AES-256, 32 bytes).
	FeatureAPIKey Feature = "workspace_apps_api_key"
)

// secretLen is the key length each feature needs.
func (f Feature) secretLen() (int, bool) {
	switch f {
	case FeatureAppToken:
		return 64, true
	case FeatureAPIKey:
		return 32, true
	}
	return 0, false
}

// Key is one crypto key as coderd serves it.
type Key struct {
	Feature  Feature
	Secret   []byte
	Sequence int32
	StartsAt time.Time
	// DeletesAt is zero when no deletion is scheduled.
	DeletesAt time.Time
}

// Key errors.
var (
	ErrUnknownKey   = errors.New("no key with that kid")
	ErrKeyNotUsable = errors.New("key is not usable now")
	ErrBadKey       = errors.New("invalid crypto key")
)

// ParseKey builds a Key from coderd's wire form (hex secret).
func ParseKey(f Feature, hexSecret string, sequence int32, startsAt, deletesAt time.Time) (Key, error) {
	n, ok := f.secretLen()
	if !ok {
		return Key{}, fmt.Errorf("%w: unknown feature %q", ErrBadKey, f)
	}
	secret, err := hex.DecodeString(hexSecret)
	if err != nil {
		return Key{}, fmt.Errorf("%w: secret is not hex: %v", ErrBadKey, err)
	}
	if len(secret) != n {
		return Key{}, fmt.Errorf("%w: %s secret has %d bytes, want %d", ErrBadKey, f, len(secret), n)
	}
	return Key{Feature: f, Secret: secret, Sequence: sequence, StartsAt: startsAt, DeletesAt: deletesAt}, nil
}

// KID is the JOSE key ID of the key: its sequence in decimal.
func (k Key) KID() string { return strconv.FormatInt(int64(k.Sequence), 10) }

// CanVerify mirrors coderd: the secret is present and the key is not yet
// deleted. StartsAt is deliberately not checked (clock skew).
func (k Key) CanVerify(now time.Time) bool {
	return len(k.Secret) > 0 && (k.DeletesAt.IsZero() || now.Before(k.DeletesAt))
}

// CanSign mirrors coderd: the key has started and can verify.
func (k Key) CanSign(now time.Time) bool {
	return !k.StartsAt.IsZero() && !k.StartsAt.After(now) && k.CanVerify(now)
}

// KeySet is an immutable set of keys of any features.
type KeySet struct {
	keys map[Feature]map[int32]Key
}

// NewKeySet builds a set; a later key with the same feature and sequence
// replaces an earlier one.
func NewKeySet(keys ...Key) *KeySet {
	s := &KeySet{keys: map[Feature]map[int32]Key{}}
	for _, k := range keys {
		m := s.keys[k.Feature]
		if m == nil {
			m = map[int32]Key{}
			s.keys[k.Feature] = m
		}
		m[k.Sequence] = k
	}
	return s
}

// Lookup finds the key a token names, usable for verifying now.
func (s *KeySet) Lookup(f Feature, kid string, now time.Time) (Key, error) {
	seq, err := strconv.ParseInt(kid, 10, 32)
	if err != nil || strconv.FormatInt(seq, 10) != kid {
		return Key{}, fmt.Errorf("%w: %q", ErrUnknownKey, kid)
	}
	k, ok := s.keys[f][int32(seq)]
	if !ok {
		return Key{}, fmt.Errorf("%w: %s kid %q", ErrUnknownKey, f, kid)
	}
	if !k.CanVerify(now) {
		return Key{}, fmt.Errorf("%w: %s kid %q was deleted at %s", ErrKeyNotUsable, f, kid, k.DeletesAt.Format(time.RFC3339))
	}
	return k, nil
}

// SigningKey is the newest key (highest sequence) usable for signing now.
func (s *KeySet) SigningKey(f Feature, now time.Time) (Key, error) {
	var best *Key
	for _, k := range s.keys[f] {
		if k.CanSign(now) && (best == nil || k.Sequence > best.Sequence) {
			k := k
			best = &k
		}
	}
	if best == nil {
		return Key{}, fmt.Errorf("%w: no %s key can sign now", ErrKeyNotUsable, f)
	}
	return *best, nil
}

// Keys lists the set's keys of a feature, highest sequence first (the
// order coderd serves them in).
func (s *KeySet) Keys(f Feature) []Key {
	out := make([]Key, 0, len(s.keys[f]))
	for _, k := range s.keys[f] {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sequence > out[j].Sequence })
	return out
}

// Source makes a fixed set a KeySource, judging key usability by now.
func (s *KeySet) Source(now func() time.Time) KeySource {
	return setSource{set: s, now: now}
}

type setSource struct {
	set *KeySet
	now func() time.Time
}

func (s setSource) VerifyingKey(_ context.Context, f Feature, kid string) (Key, error) {
	return s.set.Lookup(f, kid, s.now())
}

// KeySource finds verification keys by kid. The primary client's cache
// implements it, refetching once from the primary on an unknown kid.
type KeySource interface {
	VerifyingKey(ctx context.Context, f Feature, kid string) (Key, error)
}
