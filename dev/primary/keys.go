package devprimary

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/tokens"
)

// DefaultKeyRotation is coderd's crypto key lifetime.
const DefaultKeyRotation = 30 * 24 * time.Hour

// keyring holds the crypto keys of both proxy features and rotates them
// lazily on every access, so an injected clock drives rotation exactly.
//
// coderd's schedule, scaled to the period P (coderd: P = 30 days): a key
// is rotated when it is within P/720 (1 h) of starts_at+P; the new key
// starts at max(old expiry, now + P/1440 (30 min)); the old key is deleted
// at new.starts_at + P/720 + the 1 min token lifetime. Deleted keys are
// dropped (coderd removes their secrets, and serves only keys with one).
type keyring struct {
	mu     sync.Mutex
	period time.Duration
	keys   map[tokens.Feature][]tokens.Key
}

var keyFeatures = []tokens.Feature{tokens.FeatureAppToken, tokens.FeatureAPIKey}

func newKeyring(period time.Duration, now time.Time) (*keyring, error) {
	if period <= 0 {
		period = DefaultKeyRotation
	}
	k := &keyring{period: period, keys: map[tokens.Feature][]tokens.Key{}}
	for _, f := range keyFeatures {
		key, err := newKey(f, 1, now)
		if err != nil {
			return nil, err
		}
		k.keys[f] = []tokens.Key{key}
	}
	return k, nil
}

func newKey(f tokens.Feature, seq int32, startsAt time.Time) (tokens.Key, error) {
	n := 64
	if f == tokens.FeatureAPIKey {
		n = 32
	}
	secret := make([]byte, n)
	if _, err := rand.Read(secret); err != nil {
		return tokens.Key{}, fmt.Errorf("devprimary: generate %s key: %w", f, err)
	}
	return tokens.Key{Feature: f, Secret: secret, Sequence: seq, StartsAt: startsAt.UTC()}, nil
}

func (k *keyring) lead() time.Duration    { return k.period / 720 }
func (k *keyring) delay() time.Duration   { return k.period / 1440 }
func (k *keyring) overlap() time.Duration { return k.period/720 + tokens.TokenLifetime }

// tick applies the rotation schedule and drops deleted keys; k.mu held.
func (k *keyring) tick(now time.Time) error {
	for _, f := range keyFeatures {
		keys := k.keys[f][:0]
		for _, key := range k.keys[f] {
			if key.DeletesAt.IsZero() || now.Before(key.DeletesAt) {
				keys = append(keys, key)
			}
		}
		k.keys[f] = keys
		latest := k.latest(f)
		if latest == nil {
			key, err := newKey(f, 1, now)
			if err != nil {
				return err
			}
			k.keys[f] = append(k.keys[f], key)
			continue
		}
		if !latest.DeletesAt.IsZero() {
			continue // already rotated; its successor is the latest
		}
		expiry := latest.StartsAt.Add(k.period)
		if now.Before(expiry.Add(-k.lead())) {
			continue
		}
		starts := expiry
		if min := now.Add(k.delay()); starts.Before(min) {
			starts = min
		}
		if err := k.rotateLocked(f, starts); err != nil {
			return err
		}
	}
	return nil
}

// latest is the key with the highest sequence; k.mu held.
func (k *keyring) latest(f tokens.Feature) *tokens.Key {
	var best *tokens.Key
	for i := range k.keys[f] {
		if best == nil || k.keys[f][i].Sequence > best.Sequence {
			best = &k.keys[f][i]
		}
	}
	return best
}

// rotateLocked adds a key starting at starts and schedules the deletion of
// every key that has none yet.
func (k *keyring) rotateLocked(f tokens.Feature, starts time.Time) error {
	var seq int32 = 1
	if l := k.latest(f); l != nil {
		seq = l.Sequence + 1
	}
	key, err := newKey(f, seq, starts)
	if err != nil {
		return err
	}
	for i := range k.keys[f] {
		if k.keys[f][i].DeletesAt.IsZero() {
			k.keys[f][i].DeletesAt = starts.Add(k.overlap()).UTC()
		}
	}
	k.keys[f] = append(k.keys[f], key)
	return nil
}

// rotateNow forces a rotation of both features: the new keys sign from
// now on, the old ones verify until now + overlap.
func (k *keyring) rotateNow(now time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range keyFeatures {
		if err := k.rotateLocked(f, now); err != nil {
			return err
		}
	}
	return nil
}

// withdraw drops a key at once, as an operator deleting it would: it is
// no longer served, so proxies stop verifying with it at their next fetch.
func (k *keyring) withdraw(f tokens.Feature, seq int32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := k.keys[f]
	for i, key := range keys {
		if key.Sequence == seq {
			k.keys[f] = append(keys[:i:i], keys[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("devprimary: no %s key %d", f, seq)
}

// list returns a feature's live keys, highest sequence first.
func (k *keyring) list(f tokens.Feature, now time.Time) ([]tokens.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.tick(now); err != nil {
		return nil, err
	}
	out := append([]tokens.Key(nil), k.keys[f]...)
	sort.Slice(out, func(i, j int) bool { return out[i].Sequence > out[j].Sequence })
	return out, nil
}

// signing returns the key coderd would sign or encrypt with now: the
// newest key that can sign.
func (k *keyring) signing(f tokens.Feature, now time.Time) (tokens.Key, error) {
	keys, err := k.list(f, now)
	if err != nil {
		return tokens.Key{}, err
	}
	return tokens.NewKeySet(keys...).SigningKey(f, now)
}

// wireKey is coderd's codersdk.CryptoKey.
type wireKey struct {
	Feature   string    `json:"feature"`
	Secret    string    `json:"secret"`
	DeletesAt time.Time `json:"deletes_at"`
	Sequence  int32     `json:"sequence"`
	StartsAt  time.Time `json:"starts_at"`
}

func toWire(k tokens.Key) wireKey {
	return wireKey{
		Feature:   string(k.Feature),
		Secret:    hex.EncodeToString(k.Secret),
		DeletesAt: k.DeletesAt.UTC(),
		Sequence:  k.Sequence,
		StartsAt:  k.StartsAt.UTC(),
	}
}

// cryptoKeysResponse is coderd's wsproxysdk.CryptoKeysResponse.
type cryptoKeysResponse struct {
	CryptoKeys []wireKey `json:"crypto_keys"`
}

func (s *Server) handleCryptoKeys(w http.ResponseWriter, r *http.Request, _ *proxyState) {
	feature := r.URL.Query().Get("feature")
	if feature == "" {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Missing feature query parameter."})
		return
	}
	f := tokens.Feature(feature)
	if !slices.Contains(keyFeatures, f) {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: fmt.Sprintf("Invalid feature: %q", feature)})
		return
	}
	keys, err := s.keys.list(f, s.now())
	if err != nil {
		internalError(w, err)
		return
	}
	out := cryptoKeysResponse{CryptoKeys: make([]wireKey, 0, len(keys))}
	for _, k := range keys {
		out.CryptoKeys = append(out.CryptoKeys, toWire(k))
	}
	coderhttp.WriteJSON(w, http.StatusOK, out)
}
