package primary

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

// BenchmarkVerifyingKey is the cost every token verification pays for
// its key: a read-locked map lookup and the deletes_at check.
func BenchmarkVerifyingKey(b *testing.B) {
	src := newKeyServer(testKey(b, tokens.FeatureAppToken, 1, t0, time.Time{}), testKey(b, tokens.FeatureAppToken, 2, t0, t0.Add(time.Hour)))
	kc := NewKeyCache(src, KeyCacheOptions{Now: func() time.Time { return t0 }})
	if err := kc.Prime(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "2"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "2"); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("unknown-rate-limited", func(b *testing.B) {
		_, _ = kc.VerifyingKey(ctx, tokens.FeatureAppToken, "99") // uses up the refetch
		b.ReportAllocs()
		for b.Loop() {
			if _, err := kc.VerifyingKey(ctx, tokens.FeatureAppToken, "99"); err == nil {
				b.Fatal("found kid 99")
			}
		}
	})
}

func BenchmarkOwnerCacheHit(b *testing.B) {
	src := &ownerServer{owners: map[string]uuid.UUID{"alice/dev": uuid.New()}}
	oc := NewOwnerCache(src, OwnerCacheOptions{})
	ctx := context.Background()
	req := app("alice", "dev")
	if _, err := oc.Owner(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := oc.Owner(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssueRoundTrip is one issue call over loopback HTTP/1.1 with
// keep-alive: the client's own overhead on top of the primary's.
func BenchmarkIssueRoundTrip(b *testing.B) {
	f, srv := newFakeCoderd(b)
	f.requests = nil
	c := f.client(b, srv)
	ctx := context.Background()
	req := IssueTokenRequest{AppRequest: subdomainReq, PathAppBaseURL: "https://proxy.example.com", SessionToken: "s"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.IssueSignedAppToken(ctx, req, "203.0.113.7"); err != nil {
			b.Fatal(err)
		}
		f.mu.Lock()
		f.requests = f.requests[:0]
		f.mu.Unlock()
	}
}
