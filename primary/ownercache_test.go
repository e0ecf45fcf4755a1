package primary

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
)

// ownerServer is an in-memory OwnerResolver.
type ownerServer struct {
	mu     sync.Mutex
	owners map[string]uuid.UUID
	err    error
	calls  int
	gate   chan struct{}
}

func (s *ownerServer) ResolveAppOwner(ctx context.Context, req appurl.Request) (uuid.UUID, error) {
	s.mu.Lock()
	s.calls++
	gate, err := s.gate, s.err
	owner, ok := s.owners[req.UsernameOrID+"/"+req.WorkspaceNameOrID]
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return uuid.Nil, ctx.Err()
		}
	}
	if err != nil {
		return uuid.Nil, err
	}
	if !ok {
		return uuid.Nil, &Error{StatusCode: 404, Message: "Application not found."}
	}
	return owner, nil
}

func (s *ownerServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func app(user, ws string) appurl.Request {
	return appurl.Request{AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: user, WorkspaceNameOrID: ws, AgentNameOrID: "main", AppSlugOrPort: "code"}
}

func TestOwnerCacheHitAndExpiry(t *testing.T) {
	alice := uuid.New()
	src := &ownerServer{owners: map[string]uuid.UUID{"alice/dev": alice, "Alice/DEV": alice}}
	clk := newFakeClock(t0)
	oc := NewOwnerCache(src, OwnerCacheOptions{TTL: time.Minute, Now: clk.Now})
	ctx := context.Background()
	for i := range 3 {
		got, err := oc.Owner(ctx, app("alice", "dev"))
		if err != nil || got != alice {
			t.Fatalf("call %d: %v %v", i, got, err)
		}
	}
	// Usernames and workspace names are case-insensitive in coderd.
	if got, _ := oc.Owner(ctx, app("Alice", "DEV")); got != alice {
		t.Errorf("mixed case: %v", got)
	}
	if n := src.count(); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}
	clk.Advance(time.Minute)
	if got, err := oc.Owner(ctx, app("alice", "dev")); err != nil || got != alice {
		t.Fatal(err)
	}
	if n := src.count(); n != 2 {
		t.Errorf("calls after TTL = %d, want 2", n)
	}
}

func TestOwnerCacheNegative(t *testing.T) {
	src := &ownerServer{owners: map[string]uuid.UUID{}}
	clk := newFakeClock(t0)
	oc := NewOwnerCache(src, OwnerCacheOptions{TTL: time.Hour, NegativeTTL: 30 * time.Second, Now: clk.Now})
	ctx := context.Background()
	for range 5 {
		if _, err := oc.Owner(ctx, app("nobody", "x")); !IsStatus(err, 404) {
			t.Fatalf("err %v, want the 404", err)
		}
	}
	if n := src.count(); n != 1 {
		t.Errorf("calls = %d, want 1 (404 cached)", n)
	}
	// The app appears: seen once the negative entry expires.
	owner := uuid.New()
	src.mu.Lock()
	src.owners["nobody/x"] = owner
	src.mu.Unlock()
	clk.Advance(30 * time.Second)
	if got, err := oc.Owner(ctx, app("nobody", "x")); err != nil || got != owner {
		t.Errorf("after negative TTL: %v %v", got, err)
	}
	// Failures of the primary itself are not cached.
	for _, failure := range []error{&Error{StatusCode: 500, Message: "db"}, fmt.Errorf("x: %w", ErrUnavailable)} {
		src.mu.Lock()
		src.err = failure
		before := src.calls
		src.mu.Unlock()
		for range 3 {
			if _, err := oc.Owner(ctx, app("carol", "y")); !errors.Is(err, failure) {
				t.Errorf("err %v", err)
			}
		}
		if n := src.count() - before; n != 3 {
			t.Errorf("%v: %d calls for 3 lookups, want 3 (not cached)", failure, n)
		}
	}
}

func TestOwnerCacheBounded(t *testing.T) {
	src := &ownerServer{owners: map[string]uuid.UUID{}}
	for i := range 10 {
		src.owners[fmt.Sprintf("u%d/w", i)] = uuid.New()
	}
	oc := NewOwnerCache(src, OwnerCacheOptions{Size: 3, Now: newFakeClock(t0).Now})
	ctx := context.Background()
	for _, u := range []string{"u0", "u1", "u2", "u0", "u3"} { // u1 is least recently used when u3 arrives
		if _, err := oc.Owner(ctx, app(u, "w")); err != nil {
			t.Fatal(err)
		}
	}
	if oc.Len() != 3 {
		t.Errorf("len %d, want 3", oc.Len())
	}
	before := src.count()
	for _, u := range []string{"u0", "u2", "u3"} {
		_, _ = oc.Owner(ctx, app(u, "w"))
	}
	if src.count() != before {
		t.Error("recently used entries were evicted")
	}
	_, _ = oc.Owner(ctx, app("u1", "w"))
	if src.count() != before+1 {
		t.Error("u1 should have been evicted")
	}
	for i := range 10 {
		_, _ = oc.Owner(ctx, app(fmt.Sprintf("u%d", i), "w"))
	}
	if oc.Len() != 3 {
		t.Errorf("len %d after 10 apps, want 3", oc.Len())
	}
}

func TestOwnerCacheSingleFlight(t *testing.T) {
	const callers = 40
	owner := uuid.New()
	src := &ownerServer{owners: map[string]uuid.UUID{"alice/dev": owner}, gate: make(chan struct{})}
	oc := NewOwnerCache(src, OwnerCacheOptions{Now: newFakeClock(t0).Now})
	var joined sync.WaitGroup
	joined.Add(callers)
	oc.waiting = joined.Done
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, cancelled atomic.Int32
	for i := range callers {
		c := context.Background()
		if i == 0 {
			c = ctx // one caller gives up; the others still get the answer
		}
		wg.Go(func() {
			got, err := oc.Owner(c, app("alice", "dev"))
			switch {
			case err == nil && got == owner:
				ok.Add(1)
			case errors.Is(err, context.Canceled):
				cancelled.Add(1)
			}
		})
	}
	joined.Wait()
	cancel()
	time.Sleep(10 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	if src.count() != 1 || ok.Load()+cancelled.Load() != callers || ok.Load() < callers-1 {
		t.Errorf("calls %d, ok %d, cancelled %d", src.count(), ok.Load(), cancelled.Load())
	}
}

// TestOwnerCacheThroughPrimary: the cache over the real client.
func TestOwnerCacheThroughPrimary(t *testing.T) {
	f, srv := newFakeCoderd(t)
	owner := uuid.New()
	f.owners["alice/dev"] = owner
	oc := NewOwnerCache(f.client(t, srv), OwnerCacheOptions{})
	for range 3 {
		if got, err := oc.Owner(context.Background(), app("alice", "dev")); err != nil || got != owner {
			t.Fatalf("%v %v", got, err)
		}
		if _, err := oc.Owner(context.Background(), app("bob", "dev")); !IsStatus(err, 404) {
			t.Fatalf("bob: %v", err)
		}
	}
	f.mu.Lock()
	n := len(f.requests)
	f.mu.Unlock()
	if n != 2 {
		t.Errorf("%d primary calls, want 2", n)
	}
}
