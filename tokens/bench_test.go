package tokens

import (
	"context"
	"testing"
	"time"
)

func BenchmarkVerifyToken(b *testing.B) {
	s, err := SignToken(fuzzAppKey, sampleToken())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	src := NewKeySet(fuzzAppKey).Source(func() time.Time { return now })
	b.Run("uncached", func(b *testing.B) {
		// The full JOSE parse, HMAC and claims check that a token pays the
		// first time this process sees it.
		v := Verifier{Keys: src, Now: func() time.Time { return now }}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.verify(ctx, s, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		v := verifier(fuzzAppKey)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.VerifyToken(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecryptAPIKey(b *testing.B) {
	s, err := EncryptAPIKey(fuzzAPIKey, "abcdefghij-0123456789abcdefghijkl", now)
	if err != nil {
		b.Fatal(err)
	}
	v := verifier(fuzzAPIKey)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.DecryptAPIKey(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}
