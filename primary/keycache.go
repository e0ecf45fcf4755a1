package primary

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsedge/wsedge/tokens"
)

// Features are the crypto-key features a proxy may fetch and the key
// cache holds.
var Features = []tokens.Feature{tokens.FeatureAppToken, tokens.FeatureAPIKey}

// KeyFetcher fetches one feature's keys; *Client is one.
type KeyFetcher interface {
	CryptoKeys(ctx context.Context, f tokens.Feature) ([]tokens.Key, error)
}

// Defaults of KeyCacheOptions.
const (
	DefaultKeyRefreshInterval = 10 * time.Minute
	DefaultKeyRetryInterval   = 30 * time.Second
	DefaultMinRefetchInterval = 5 * time.Second
	DefaultKeyFetchTimeout    = 10 * time.Second
)

// KeyCacheOptions configure a KeyCache.
type KeyCacheOptions struct {
	// RefreshInterval is the period of Run's refresh of both features
	// (coderd's proxy: 10 min).
	RefreshInterval time.Duration
	// RetryInterval is how soon Run tries again after a failed refresh.
	RetryInterval time.Duration
	// MinRefetchInterval rate-limits the refetch an unknown kid causes,
	// per feature, so a flood of bogus kids cannot hammer the primary (a
	// refetch that found a newer key does not count: keys are rotating).
	MinRefetchInterval time.Duration
	// FetchTimeout bounds a refetch, which runs detached from the
	// callers waiting for it.
	FetchTimeout time.Duration
	// Now is the clock for key validity and rate limits; nil: time.Now.
	Now func() time.Time
	// After is the timer of Run's loop; nil: time.After.
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// Registerer, if set, receives the cache's metrics (fetches by
	// outcome, keys held, last success), once per Registerer.
	Registerer prometheus.Registerer
}

// KeyCache holds the primary's crypto keys for both features and
// implements tokens.KeySource: lookups by kid are served from memory;
// an unknown kid causes one refetch of that feature, shared by every
// concurrent caller and rate-limited, before it is reported unknown.
type KeyCache struct {
	src  KeyFetcher
	opts KeyCacheOptions
	log  *slog.Logger

	mu      sync.RWMutex
	feats   map[tokens.Feature]*featureKeys
	flights map[tokens.Feature]*keyFlight

	// waiting, when set (tests), is called as a caller starts waiting
	// for a refetch.
	waiting func()
}

type featureKeys struct {
	keys map[int32]tokens.Key
	// fetchStart is when the fetch that produced keys began; an older
	// fetch finishing later does not overwrite a newer answer.
	fetchStart  time.Time
	lastSuccess time.Time
	lastError   error
	lastRefetch time.Time
}

type keyFlight struct {
	done chan struct{}
	err  error
}

var _ tokens.KeySource = (*KeyCache)(nil)

// NewKeyCache builds an empty cache; call Prime (or VerifyingKey, which
// fetches on demand) before serving.
func NewKeyCache(src KeyFetcher, opts KeyCacheOptions) *KeyCache {
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultKeyRefreshInterval
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultKeyRetryInterval
	}
	if opts.MinRefetchInterval <= 0 {
		opts.MinRefetchInterval = DefaultMinRefetchInterval
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultKeyFetchTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &KeyCache{src: src, opts: opts, log: log, feats: map[tokens.Feature]*featureKeys{}, flights: map[tokens.Feature]*keyFlight{}}
	for _, f := range Features {
		k.feats[f] = &featureKeys{keys: map[int32]tokens.Key{}}
	}
	if opts.Registerer != nil {
		k.registerMetrics(opts.Registerer)
	}
	return k
}

// Prime fetches both features synchronously; start-up fails if it does.
func (k *KeyCache) Prime(ctx context.Context) error {
	var errs []error
	for _, f := range Features {
		if err := k.refresh(ctx, f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run refreshes both features every RefreshInterval (RetryInterval after
// a failure) until ctx is done, then returns nil. A failed refresh keeps
// the keys already held: they stay valid until their deletes_at.
func (k *KeyCache) Run(ctx context.Context) error {
	wait := k.opts.RefreshInterval
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.opts.After(wait):
		}
		if err := k.Prime(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			k.log.Warn("crypto key refresh failed; keeping the keys held", slog.Any("error", err), slog.Duration("retry_in", k.opts.RetryInterval))
			wait = k.opts.RetryInterval
			continue
		}
		wait = k.opts.RefreshInterval
	}
}

// refresh fetches one feature and replaces its keys.
func (k *KeyCache) refresh(ctx context.Context, f tokens.Feature) error {
	start := k.opts.Now()
	keys, err := k.src.CryptoKeys(ctx, f)
	k.mu.Lock()
	defer k.mu.Unlock()
	fk := k.feats[f]
	if err != nil {
		fk.lastError = err
		return fmt.Errorf("refresh %s keys: %w", f, err)
	}
	if start.Before(fk.fetchStart) {
		return nil
	}
	m := make(map[int32]tokens.Key, len(keys))
	for _, key := range keys {
		if key.Feature == f {
			m[key.Sequence] = key
		}
	}
	// A fetch that found a newer key shows the primary is rotating, not
	// that someone sends bogus kids: the next unknown kid may refetch at
	// once (a second rotation soon after the first must not fail).
	if maxSequence(m) > maxSequence(fk.keys) {
		fk.lastRefetch = time.Time{}
	}
	fk.keys, fk.fetchStart, fk.lastSuccess, fk.lastError = m, start, k.opts.Now(), nil
	k.log.Debug("crypto keys refreshed", slog.String("feature", string(f)), slog.Int("keys", len(m)))
	return nil
}

// VerifyingKey finds the key a token's kid names, usable for verifying
// now ("can verify": not past deletes_at). An unknown kid triggers one
// refetch of the feature (shared by concurrent callers, at most one per
// MinRefetchInterval) before tokens.ErrUnknownKey is returned.
func (k *KeyCache) VerifyingKey(ctx context.Context, f tokens.Feature, kid string) (tokens.Key, error) {
	seq, ok := parseKID(kid)
	if !ok {
		return tokens.Key{}, fmt.Errorf("%w: %q is not a key sequence", tokens.ErrUnknownKey, kid)
	}
	if _, ok := k.feats[f]; !ok {
		return tokens.Key{}, fmt.Errorf("%w: feature %q is not cached", tokens.ErrUnknownKey, f)
	}
	if key, found, err := k.lookup(f, seq, kid); found {
		return key, err
	}
	if err := k.refetch(ctx, f); err != nil {
		return tokens.Key{}, fmt.Errorf("%w: %s kid %q: %w", tokens.ErrUnknownKey, f, kid, err)
	}
	if key, found, err := k.lookup(f, seq, kid); found {
		return key, err
	}
	return tokens.Key{}, fmt.Errorf("%w: %s kid %q", tokens.ErrUnknownKey, f, kid)
}

func (k *KeyCache) lookup(f tokens.Feature, seq int32, kid string) (tokens.Key, bool, error) {
	k.mu.RLock()
	key, ok := k.feats[f].keys[seq]
	k.mu.RUnlock()
	if !ok {
		return tokens.Key{}, false, nil
	}
	if !key.CanVerify(k.opts.Now()) {
		return tokens.Key{}, true, fmt.Errorf("%w: %s kid %q was deleted at %s", tokens.ErrKeyNotUsable, f, kid, key.DeletesAt.UTC().Format(time.RFC3339))
	}
	return key, true, nil
}

// refetch joins the feature's refetch in flight or starts one, unless
// one started less than MinRefetchInterval ago.
func (k *KeyCache) refetch(ctx context.Context, f tokens.Feature) error {
	k.mu.Lock()
	fl := k.flights[f]
	if fl == nil {
		fk := k.feats[f]
		now := k.opts.Now()
		if !fk.lastRefetch.IsZero() && now.Sub(fk.lastRefetch) < k.opts.MinRefetchInterval {
			k.mu.Unlock()
			return nil
		}
		fk.lastRefetch = now
		fl = &keyFlight{done: make(chan struct{})}
		k.flights[f] = fl
		// The fetch outlives any one caller (others may be waiting) but
		// is bounded by FetchTimeout.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.opts.FetchTimeout)
		go func() {
			defer cancel()
			fl.err = k.refresh(fctx, f)
			k.mu.Lock()
			delete(k.flights, f)
			k.mu.Unlock()
			close(fl.done)
		}()
	}
	k.mu.Unlock()
	if k.waiting != nil {
		k.waiting()
	}
	select {
	case <-fl.done:
		return fl.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func maxSequence(keys map[int32]tokens.Key) int32 {
	var highest int32
	for seq := range keys {
		highest = max(highest, seq)
	}
	return highest
}

// parseKID reads a kid the way coderd writes it: the decimal sequence.
func parseKID(kid string) (int32, bool) {
	n, err := strconv.ParseInt(kid, 10, 32)
	if err != nil || strconv.FormatInt(n, 10) != kid {
		return 0, false
	}
	return int32(n), true
}

// Keys lists the cached keys of a feature, highest sequence first.
func (k *KeyCache) Keys(f tokens.Feature) []tokens.Key {
	k.mu.RLock()
	defer k.mu.RUnlock()
	fk, ok := k.feats[f]
	if !ok {
		return nil
	}
	return tokens.NewKeySet(mapValues(fk.keys)...).Keys(f)
}

func mapValues(m map[int32]tokens.Key) []tokens.Key {
	out := make([]tokens.Key, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// KeyCacheStatus is the cache's state for one feature, for health pages.
type KeyCacheStatus struct {
	Feature     tokens.Feature
	Keys        int
	LastSuccess time.Time
	LastError   error
}

// Status reports both features' state.
func (k *KeyCache) Status() []KeyCacheStatus {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]KeyCacheStatus, 0, len(Features))
	for _, f := range Features {
		fk := k.feats[f]
		out = append(out, KeyCacheStatus{Feature: f, Keys: len(fk.keys), LastSuccess: fk.lastSuccess, LastError: fk.lastError})
	}
	return out
}
