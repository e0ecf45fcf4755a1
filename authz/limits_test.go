package authz

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func assertShed(t *testing.T, d Decision, wantType string) {
	t.Helper()
	if d.Allow {
		t.Fatal("a shed Check was allowed")
	}
	if d.Status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503 (body %s)", d.Status, d.Body)
	}
	if got := d.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if !strings.HasPrefix(d.Header.Get("Content-Type"), wantType) {
		t.Errorf("content type %q, want %s", d.Header.Get("Content-Type"), wantType)
	}
}

// TestChecksBeyondTheLimitAre503: with every Check slot taken by requests
// waiting on the primary, the next Check is answered at once with 503 and
// Retry-After (JSON for API clients, a page for browsers), never an allow;
// once the slots free up, Checks are decided normally again.
func TestChecksBeyondTheLimitAre503(t *testing.T) {
	f := newFixture(t, nil)
	f.svc.checks = newSlots(2)
	f.issuer.gate = make(chan struct{})
	var joined atomic.Int64
	f.svc.issuer.joined = func() { joined.Add(1) }
	cold := func() *Input {
		return request("code--main--dev--alice.apps.example.com", "/", "Cookie", tokens.SubdomainAppSessionCookie(wildcard)+"=session")
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if d := f.svc.Check(context.Background(), cold()); !d.Allow {
				t.Errorf("held Check denied: %d %s", d.Status, d.Body)
			}
		})
	}
	waitFor(t, "two Checks waiting on the primary", func() bool { return joined.Load() == 2 })

	assertShed(t, f.svc.Check(context.Background(), request(accessHost, "/@alice/dev.main/apps/code/", "Accept", "application/json")), "application/json")
	assertShed(t, f.svc.Check(context.Background(), request(accessHost, "/@alice/dev.main/apps/code/", "Accept", "text/html")), "text/html")

	close(f.issuer.gate)
	wg.Wait()
	if d := f.svc.Check(context.Background(), cold()); !d.Allow {
		t.Fatalf("after the burst: %d %s, want an allow", d.Status, d.Body)
	}
}

// TestIssueCallsBeyondTheLimitAre503: cold requests of many sessions cost
// at most Limits.IssueCalls concurrent calls to the primary; the others
// are answered 503 with Retry-After instead of queueing on it.
func TestIssueCallsBeyondTheLimitAre503(t *testing.T) {
	f := newFixture(t, nil)
	f.svc.issuer.calls = newSlots(2)
	f.issuer.gate = make(chan struct{})
	cold := func(session string) *Input {
		return request("code--main--dev--alice.apps.example.com", "/", "Accept", "application/json", "Cookie", tokens.SubdomainAppSessionCookie(wildcard)+"="+session)
	}
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for _, s := range []string{"s1", "s2"} {
		wg.Go(func() {
			if d := f.svc.Check(context.Background(), cold(s)); d.Allow {
				allowed.Add(1)
			}
		})
	}
	waitFor(t, "two issue calls at the primary", func() bool { return f.issuer.calls.Load() == 2 })
	if n := len(f.svc.issuer.calls); n != 2 {
		t.Errorf("issue calls in flight %d, want 2", n)
	}
	for _, s := range []string{"s3", "s4", "s5"} {
		assertShed(t, f.svc.Check(context.Background(), cold(s)), "application/json")
	}
	if n := f.issuer.calls.Load(); n != 2 {
		t.Fatalf("the primary got %d calls, want 2", n)
	}
	close(f.issuer.gate)
	wg.Wait()
	if allowed.Load() != 2 {
		t.Fatalf("%d of the 2 admitted sessions allowed", allowed.Load())
	}
	if d := f.svc.Check(context.Background(), cold("s3")); !d.Allow {
		t.Fatalf("after the burst: %d %s, want an allow", d.Status, d.Body)
	}
}

func TestNegativeLimitsAreRefused(t *testing.T) {
	if _, err := (Limits{Checks: -1}).withDefaults(); err == nil {
		t.Fatal("negative Checks accepted")
	}
	l, err := Limits{}.withDefaults()
	if err != nil || l.Checks != DefaultMaxChecks || l.IssueCalls != DefaultMaxIssueCalls {
		t.Fatalf("defaults %+v, %v", l, err)
	}
}
