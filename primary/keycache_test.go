package primary

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeTimer hands out channels the test fires by hand and records the
// durations asked for.
type fakeTimer struct {
	asked chan time.Duration
	fire  chan time.Time
}

func newFakeTimer() *fakeTimer {
	return &fakeTimer{asked: make(chan time.Duration, 100), fire: make(chan time.Time)}
}

func (f *fakeTimer) After(d time.Duration) <-chan time.Time {
	f.asked <- d
	return f.fire
}

// next waits until the loop asks for a timer and returns the duration.
func (f *fakeTimer) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.asked:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("loop did not wait for a timer")
		return 0
	}
}

func (f *fakeTimer) tick() { f.fire <- time.Time{} }

// keyServer is an in-memory KeyFetcher that counts fetches and can
// block them.
type keyServer struct {
	mu      sync.Mutex
	keys    map[tokens.Feature][]tokens.Key
	err     error
	fetches map[tokens.Feature]int
	gate    chan struct{}
}

func newKeyServer(keys ...tokens.Key) *keyServer {
	s := &keyServer{keys: map[tokens.Feature][]tokens.Key{}, fetches: map[tokens.Feature]int{}}
	s.set(keys...)
	return s
}

func (s *keyServer) set(keys ...tokens.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = map[tokens.Feature][]tokens.Key{}
	for _, k := range keys {
		s.keys[k.Feature] = append(s.keys[k.Feature], k)
	}
}

func (s *keyServer) count(f tokens.Feature) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches[f]
}

func (s *keyServer) CryptoKeys(ctx context.Context, f tokens.Feature) ([]tokens.Key, error) {
	s.mu.Lock()
	s.fetches[f]++
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return append([]tokens.Key(nil), s.keys[f]...), nil
}

func TestKeyCachePrimeAndHit(t *testing.T) {
	clk := newFakeClock(t0)
	app := testKey(t, tokens.FeatureAppToken, 3, t0, time.Time{})
	api := testKey(t, tokens.FeatureAPIKey, 5, t0, time.Time{})
	src := newKeyServer(app, api)
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now})
	if err := kc.Prime(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		f   tokens.Feature
		kid string
		sec []byte
	}{{tokens.FeatureAppToken, "3", app.Secret}, {tokens.FeatureAPIKey, "5", api.Secret}} {
		k, err := kc.VerifyingKey(context.Background(), tt.f, tt.kid)
		if err != nil || string(k.Secret) != string(tt.sec) {
			t.Errorf("%s kid %s: %v", tt.f, tt.kid, err)
		}
	}
	// The app-token kid 5 does not exist: the feature is part of the key.
	if _, err := kc.VerifyingKey(context.Background(), tokens.FeatureAppToken, "5"); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Errorf("kid 5 of the wrong feature: %v", err)
	}
	if n := src.count(tokens.FeatureAppToken); n != 2 {
		t.Errorf("app-token fetches = %d, want 2 (prime + one refetch)", n)
	}
	// Malformed kids and unknown features never reach the primary.
	for _, kid := range []string{"", "x", "03", "+3", "99999999999"} {
		if _, err := kc.VerifyingKey(context.Background(), tokens.FeatureAppToken, kid); !errors.Is(err, tokens.ErrUnknownKey) {
			t.Errorf("kid %q: %v", kid, err)
		}
	}
	if _, err := kc.VerifyingKey(context.Background(), "oidc_convert", "3"); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Errorf("foreign feature: %v", err)
	}
	if n := src.count(tokens.FeatureAppToken); n != 2 {
		t.Errorf("app-token fetches = %d after malformed kids, want 2", n)
	}
	st := kc.Status()
	if len(st) != 2 || st[0].Keys != 1 || !st[0].LastSuccess.Equal(t0) || st[0].LastError != nil {
		t.Errorf("status %+v", st)
	}
}

func TestKeyCacheUnknownKidSingleFlight(t *testing.T) {
	const callers = 50
	clk := newFakeClock(t0)
	old := testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{})
	src := newKeyServer(old)
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now})
	if err := kc.Prime(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The primary rotated: kid 2 exists there but not in the cache.
	fresh := testKey(t, tokens.FeatureAppToken, 2, t0, time.Time{})
	src.set(old, fresh)
	src.mu.Lock()
	src.gate = make(chan struct{})
	src.mu.Unlock()
	var joined sync.WaitGroup
	joined.Add(callers)
	kc.waiting = joined.Done

	var wg sync.WaitGroup
	var ok atomic.Int32
	for range callers {
		wg.Go(func() {
			k, err := kc.VerifyingKey(context.Background(), tokens.FeatureAppToken, "2")
			if err == nil && k.Sequence == 2 {
				ok.Add(1)
			}
		})
	}
	joined.Wait() // every caller waits on the one refetch
	close(src.gate)
	wg.Wait()
	if ok.Load() != callers {
		t.Errorf("%d of %d callers got the key", ok.Load(), callers)
	}
	if n := src.count(tokens.FeatureAppToken); n != 2 {
		t.Errorf("fetches = %d, want 2 (prime + one shared refetch)", n)
	}
}

func TestKeyCacheRefetchRateLimited(t *testing.T) {
	clk := newFakeClock(t0)
	src := newKeyServer(testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{}))
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now, MinRefetchInterval: 5 * time.Second})
	ctx := context.Background()
	if err := kc.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	// A flood of bogus kids costs one refetch per interval.
	for i := range 1000 {
		kid := []string{"7", "8", "9", "1000"}[i%4]
		if _, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, kid); !errors.Is(err, tokens.ErrUnknownKey) {
			t.Fatalf("kid %s: %v", kid, err)
		}
	}
	if n := src.count(tokens.FeatureAppToken); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
	// Once the interval has passed a new key is found again.
	src.set(testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{}), testKey(t, tokens.FeatureAppToken, 7, t0, time.Time{}))
	if _, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "7"); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Errorf("within the interval: %v", err)
	}
	clk.Advance(5 * time.Second)
	if k, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "7"); err != nil || k.Sequence != 7 {
		t.Errorf("after the interval: %v", err)
	}
	if n := src.count(tokens.FeatureAppToken); n != 3 {
		t.Errorf("fetches = %d, want 3", n)
	}
}

func TestKeyCacheRefetchFailure(t *testing.T) {
	clk := newFakeClock(t0)
	src := newKeyServer(testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{}))
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now})
	ctx := context.Background()
	if err := kc.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.err = &Error{StatusCode: 500, Message: "boom"}
	src.mu.Unlock()
	_, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "2")
	if !errors.Is(err, tokens.ErrUnknownKey) || !IsStatus(err, 500) {
		t.Errorf("err = %v, want ErrUnknownKey wrapping the 500", err)
	}
	// Known keys keep working while the primary fails.
	if _, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "1"); err != nil {
		t.Errorf("known key: %v", err)
	}
	if st := kc.Status(); st[0].LastError == nil || st[0].Keys != 1 {
		t.Errorf("status %+v", st[0])
	}
}

func TestKeyCacheCallerCancelDoesNotKillRefetch(t *testing.T) {
	clk := newFakeClock(t0)
	src := newKeyServer()
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now})
	src.set(testKey(t, tokens.FeatureAppToken, 4, t0, time.Time{}))
	src.mu.Lock()
	src.gate = make(chan struct{})
	src.mu.Unlock()
	waiting := make(chan struct{}, 2)
	kc.waiting = func() { waiting <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "4")
		first <- err
	}()
	<-waiting
	second := make(chan error, 1)
	go func() {
		_, err := kc.VerifyingKey(context.Background(), tokens.FeatureAppToken, "4")
		second <- err
	}()
	<-waiting
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	close(src.gate)
	if err := <-second; err != nil {
		t.Errorf("other caller: %v", err)
	}
}

func TestKeyCacheDeletesAt(t *testing.T) {
	clk := newFakeClock(t0)
	deletes := t0.Add(time.Hour)
	src := newKeyServer(testKey(t, tokens.FeatureAPIKey, 1, t0.Add(-time.Hour), deletes))
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now})
	ctx := context.Background()
	if err := kc.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Set(deletes.Add(-time.Nanosecond))
	if _, err := kc.VerifyingKey(ctx, tokens.FeatureAPIKey, "1"); err != nil {
		t.Errorf("just before deletes_at: %v", err)
	}
	clk.Set(deletes)
	if _, err := kc.VerifyingKey(ctx, tokens.FeatureAPIKey, "1"); !errors.Is(err, tokens.ErrKeyNotUsable) {
		t.Errorf("at deletes_at: %v, want ErrKeyNotUsable", err)
	}
	if n := src.count(tokens.FeatureAPIKey); n != 1 {
		t.Errorf("a deleted key caused a refetch (%d fetches)", n)
	}
	// starts_at in the future does not stop verification (clock skew).
	src.set(testKey(t, tokens.FeatureAPIKey, 2, deletes.Add(time.Hour), time.Time{}))
	if _, err := kc.VerifyingKey(ctx, tokens.FeatureAPIKey, "2"); err != nil {
		t.Errorf("future starts_at: %v", err)
	}
}

func TestKeyCacheRunRefreshes(t *testing.T) {
	clk := newFakeClock(t0)
	timer := newFakeTimer()
	src := newKeyServer(testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{}))
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now, After: timer.After, RefreshInterval: 10 * time.Minute, RetryInterval: 30 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	if err := kc.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- kc.Run(ctx) }()

	if d := timer.next(t); d != 10*time.Minute {
		t.Errorf("first wait %v, want 10m", d)
	}
	src.set(testKey(t, tokens.FeatureAppToken, 2, t0, time.Time{}), testKey(t, tokens.FeatureAPIKey, 1, t0, time.Time{}))
	timer.tick()
	if d := timer.next(t); d != 10*time.Minute {
		t.Errorf("wait after success %v", d)
	}
	if got := kc.Keys(tokens.FeatureAppToken); len(got) != 1 || got[0].Sequence != 2 {
		t.Errorf("after refresh: %v (a key the primary no longer serves must go)", got)
	}
	if got := kc.Keys(tokens.FeatureAPIKey); len(got) != 1 {
		t.Errorf("api keys after refresh: %v", got)
	}
	// A failed refresh keeps the keys and retries sooner.
	src.mu.Lock()
	src.err = errors.New("primary down")
	src.mu.Unlock()
	timer.tick()
	if d := timer.next(t); d != 30*time.Second {
		t.Errorf("wait after failure %v, want 30s", d)
	}
	if got := kc.Keys(tokens.FeatureAppToken); len(got) != 1 {
		t.Errorf("keys dropped on failure: %v", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
	if n := src.count(tokens.FeatureAppToken); n != 3 {
		t.Errorf("fetches %d, want 3", n)
	}
}

// TestKeyRotationThroughPrimary: tokens signed before a rotation keep
// verifying through the cache until the old key's deletes_at; tokens of
// the new key verify at once (unknown kid → refetch). Real HTTP.
func TestKeyRotationThroughPrimary(t *testing.T) {
	f, srv := newFakeCoderd(t)
	clk := newFakeClock(t0)
	k1 := testKey(t, tokens.FeatureAppToken, 1, t0.Add(-30*24*time.Hour), time.Time{})
	f.keys[tokens.FeatureAppToken] = []CryptoKey{wireKey(k1)}
	c := f.client(t, srv)
	kc := NewKeyCache(c, KeyCacheOptions{Now: clk.Now})
	ctx := context.Background()
	if err := kc.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	v := &tokens.Verifier{Keys: kc, Now: clk.Now}
	sign := func(k tokens.Key, exp time.Time) string {
		s, err := tokens.SignToken(k, tokens.SignedToken{Request: subdomainReq, Expiry: exp, AppURL: "http://127.0.0.1:8080"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Long-lived on purpose, so only the key's deletion can end it.
	old := sign(k1, t0.Add(3*time.Hour))
	if _, err := v.VerifyToken(ctx, old); err != nil {
		t.Fatal(err)
	}
	// Rotation on the primary: new key 2, old key deleted in 1 h 1 min.
	clk.Advance(time.Minute)
	deletes := clk.Now().Add(time.Hour + time.Minute)
	k1.DeletesAt = deletes
	k2 := testKey(t, tokens.FeatureAppToken, 2, clk.Now(), time.Time{})
	f.mu.Lock()
	f.keys[tokens.FeatureAppToken] = []CryptoKey{wireKey(k2), wireKey(k1)}
	f.mu.Unlock()
	// A token of the new key arrives before any refresh.
	fresh := sign(k2, clk.Now().Add(time.Minute))
	if tok, err := v.VerifyToken(ctx, fresh); err != nil || !tok.MatchesRequest(subdomainReq) {
		t.Fatalf("new-key token: %v", err)
	}
	clk.Set(deletes.Add(-time.Second))
	if _, err := v.VerifyToken(ctx, old); err != nil {
		t.Errorf("old-key token just before deletes_at: %v", err)
	}
	other := sign(k1, t0.Add(3*time.Hour).Add(time.Second)) // not in the verifier's cache
	if _, err := v.VerifyToken(ctx, other); err != nil {
		t.Errorf("uncached old-key token before deletes_at: %v", err)
	}
	clk.Set(deletes)
	// A fresh verifier: tokens.Verifier remembers verified tokens until
	// their own expiry when their key had no deletes_at yet.
	v = &tokens.Verifier{Keys: kc, Now: clk.Now}
	for _, s := range []string{old, other} {
		if _, err := v.VerifyToken(ctx, s); !errors.Is(err, tokens.ErrKeyNotUsable) {
			t.Errorf("old-key token at deletes_at: %v, want ErrKeyNotUsable", err)
		}
	}
}

// TestKeyCacheBackToBackRotations: the primary rotates twice within the
// refetch rate limit (an emergency rotation after a scheduled one). A
// refetch that found a newer key proves the kids are real, so it does not
// hold back the next one: coderd's own proxy refetches on every unknown
// sequence and would not fail either. Bogus kids stay rate-limited.
func TestKeyCacheBackToBackRotations(t *testing.T) {
	clk := newFakeClock(t0)
	k1 := testKey(t, tokens.FeatureAppToken, 1, t0, time.Time{})
	src := newKeyServer(k1)
	kc := NewKeyCache(src, KeyCacheOptions{Now: clk.Now, MinRefetchInterval: 5 * time.Second})
	ctx := context.Background()
	if err := kc.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	k2 := testKey(t, tokens.FeatureAppToken, 2, t0, time.Time{})
	k3 := testKey(t, tokens.FeatureAppToken, 3, t0, time.Time{})
	src.set(k1, k2)
	if k, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "2"); err != nil || k.Sequence != 2 {
		t.Fatalf("first rotation: %v", err)
	}
	clk.Advance(time.Second)
	src.set(k1, k2, k3)
	if k, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "3"); err != nil || k.Sequence != 3 {
		t.Fatalf("second rotation a second later: %v", err)
	}
	// The refetch for kid 3 was fruitful too, so one bogus kid costs one
	// more fetch; after that bogus kids are rate-limited again.
	for _, kid := range []string{"4", "5", "6", "7"} {
		if _, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, kid); !errors.Is(err, tokens.ErrUnknownKey) {
			t.Fatalf("bogus kid %s: %v", kid, err)
		}
	}
	if n := src.count(tokens.FeatureAppToken); n != 4 {
		t.Errorf("fetches = %d, want 4 (prime, two rotations, one bogus kid)", n)
	}
}
