package primary

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

// BenchmarkVerifyingKeyBaseline is the floor under BenchmarkVerifyingKey:
// a read-locked lookup in a map of the same shape, hit and miss.
func BenchmarkVerifyingKeyBaseline(b *testing.B) {
	type kid struct {
		f   tokens.Feature
		kid string
	}
	var mu sync.RWMutex
	keys := map[kid]tokens.Key{
		{tokens.FeatureAppToken, "1"}: testKey(b, tokens.FeatureAppToken, 1, t0, time.Time{}),
		{tokens.FeatureAppToken, "2"}: testKey(b, tokens.FeatureAppToken, 2, t0, t0.Add(time.Hour)),
	}
	lookup := func(k kid) (tokens.Key, bool) {
		mu.RLock()
		defer mu.RUnlock()
		v, ok := keys[k]
		return v, ok
	}
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := lookup(kid{tokens.FeatureAppToken, "2"}); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok := lookup(kid{tokens.FeatureAppToken, "2"}); !ok {
					b.Fatal("miss")
				}
			}
		})
	})
	b.Run("unknown-rate-limited", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := lookup(kid{tokens.FeatureAppToken, "99"}); ok {
				b.Fatal("found kid 99")
			}
		}
	})
}

// BenchmarkOwnerCacheHitBaseline is the floor under
// BenchmarkOwnerCacheHit: a read-locked map lookup by the same
// user/workspace pair.
func BenchmarkOwnerCacheHitBaseline(b *testing.B) {
	type key struct{ user, workspace string }
	var mu sync.RWMutex
	owners := map[key]uuid.UUID{{"alice", "dev"}: uuid.New()}
	req := app("alice", "dev")
	b.ReportAllocs()
	for b.Loop() {
		mu.RLock()
		_, ok := owners[key{req.UsernameOrID, req.WorkspaceNameOrID}]
		mu.RUnlock()
		if !ok {
			b.Fatal("miss")
		}
	}
}

// BenchmarkIssueRoundTripBaseline is the floor under
// BenchmarkIssueRoundTrip: a bare JSON POST over loopback HTTP/1.1 with
// keep-alive to a server that reads the body and answers the same 201
// JSON, decoded by the caller; no client library, no fake coderd logic.
func BenchmarkIssueRoundTripBaseline(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"signed_token_str":"header.payload.sig"}`)
	}))
	defer srv.Close()
	body, err := json.Marshal(IssueTokenRequest{AppRequest: subdomainReq, PathAppBaseURL: "https://proxy.example.com", SessionToken: "s"})
	if err != nil {
		b.Fatal(err)
	}
	c := srv.Client()
	b.ReportAllocs()
	for b.Loop() {
		res, err := c.Post(srv.URL+"/api/v2/workspaceproxies/me/issue-signed-app-token", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		var out struct {
			SignedTokenStr string `json:"signed_token_str"`
		}
		err = json.NewDecoder(res.Body).Decode(&out)
		_ = res.Body.Close()
		if err != nil || res.StatusCode != http.StatusCreated || out.SignedTokenStr == "" {
			b.Fatalf("status %d, %v", res.StatusCode, err)
		}
	}
}
