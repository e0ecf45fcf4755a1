package devprimary

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

const keysPath = "/api/v2/workspaceproxies/me/crypto-keys"

func TestCryptoKeysErrors(t *testing.T) {
	h := newHarness(t, nil)
	wantJSONError(t, h.proxy(http.MethodGet, keysPath, nil), http.StatusBadRequest, "Missing feature query parameter.", "")
	wantJSONError(t, h.proxy(http.MethodGet, keysPath+"?feature=oidc_convert", nil), http.StatusBadRequest, `Invalid feature: "oidc_convert"`, "")
	wantJSONError(t, h.proxy(http.MethodGet, keysPath+"?feature=x", nil), http.StatusBadRequest, `Invalid feature: "x"`, "")
}

type servedKey struct {
	Feature   string `json:"feature"`
	Secret    string `json:"secret"`
	DeletesAt string `json:"deletes_at"`
	Sequence  int32  `json:"sequence"`
	StartsAt  string `json:"starts_at"`
}

func (h *harness) served(f tokens.Feature) []servedKey {
	h.t.Helper()
	res := h.proxy(http.MethodGet, keysPath+"?feature="+string(f), nil)
	wantStatus(h.t, res, http.StatusOK)
	var out struct {
		CryptoKeys []servedKey `json:"crypto_keys"`
	}
	res.json(h.t, &out)
	return out.CryptoKeys
}

func TestCryptoKeysShape(t *testing.T) {
	h := newHarness(t, nil)
	hex := regexp.MustCompile(`^[0-9a-f]+$`)
	for f, secretLen := range map[tokens.Feature]int{tokens.FeatureAppToken: 128, tokens.FeatureAPIKey: 64} {
		keys := h.served(f)
		if len(keys) != 1 {
			t.Fatalf("%s: %d keys", f, len(keys))
		}
		k := keys[0]
		if k.Feature != string(f) || k.Sequence != 1 || len(k.Secret) != secretLen || !hex.MatchString(k.Secret) {
			t.Errorf("%s key %+v", f, k)
		}
		if k.DeletesAt != "0001-01-01T00:00:00Z" {
			t.Errorf("deletes_at %q, want the zero time", k.DeletesAt)
		}
		if k.StartsAt != "2026-03-01T12:00:00Z" {
			t.Errorf("starts_at %q", k.StartsAt)
		}
	}
}

// TestKeyRotationSchedule follows coderd's schedule with its own numbers
// (30-day keys): rotation an hour before expiry, the new key published
// ahead and starting at the old expiry, the old key deleted 1 h 1 min
// after that.
func TestKeyRotationSchedule(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.KeyRotation = 30 * 24 * time.Hour })
	t0 := h.clock.Now()
	expiry := t0.Add(30 * 24 * time.Hour)

	h.clock.Set(expiry.Add(-61 * time.Minute))
	if keys := h.served(tokens.FeatureAppToken); len(keys) != 1 {
		t.Fatalf("rotated too early: %+v", keys)
	}
	h.clock.Set(expiry.Add(-time.Hour))
	keys := h.served(tokens.FeatureAppToken)
	if len(keys) != 2 || keys[0].Sequence != 2 || keys[1].Sequence != 1 {
		t.Fatalf("after rotation: %+v (want sequence 2 then 1)", keys)
	}
	if keys[0].StartsAt != expiry.Format(time.RFC3339) || keys[0].DeletesAt != "0001-01-01T00:00:00Z" {
		t.Errorf("new key %+v", keys[0])
	}
	if want := expiry.Add(time.Hour + time.Minute).Format(time.RFC3339); keys[1].DeletesAt != want {
		t.Errorf("old key deletes_at %s, want %s", keys[1].DeletesAt, want)
	}
	// The new key is published but does not sign before it starts.
	if k, _ := h.s.SigningKey(tokens.FeatureAppToken); k.Sequence != 1 {
		t.Errorf("signing with %d before the new key starts", k.Sequence)
	}
	h.clock.Set(expiry)
	if k, _ := h.s.SigningKey(tokens.FeatureAppToken); k.Sequence != 2 {
		t.Errorf("signing with %d after the new key started", k.Sequence)
	}
	h.clock.Set(expiry.Add(time.Hour + time.Minute))
	if keys := h.served(tokens.FeatureAppToken); len(keys) != 1 || keys[0].Sequence != 2 {
		t.Fatalf("old key still served after deletes_at: %+v", keys)
	}
	if keys := h.served(tokens.FeatureAPIKey); len(keys) != 1 || keys[0].Sequence != 2 {
		t.Fatalf("api key feature: %+v", keys)
	}
}

// TestTokensSurviveRotation: a token signed before a rotation verifies
// with the served keys until its key's deletes_at; tokens signed after
// use the new key.
func TestTokensSurviveRotation(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.KeyRotation = time.Hour })
	old := h.issueOK(ownerSubdomain("owner-app"), aliceToken)

	if err := h.s.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	keys := h.served(tokens.FeatureAppToken)
	if len(keys) != 2 || keys[0].Sequence != 2 {
		t.Fatalf("after RotateKeys: %+v", keys)
	}
	// Overlap for a 1 h period: 1h/720 + the 1 min token lifetime.
	deletes, _ := time.Parse(time.RFC3339, keys[1].DeletesAt)
	if want := h.clock.Now().Add(5*time.Second + time.Minute); !deletes.Equal(want) {
		t.Errorf("old deletes_at %s, want %s", deletes, want)
	}
	fresh := h.issueOK(ownerSubdomain("owner-app"), aliceToken)
	if kid(t, fresh) != "2" || kid(t, old) != "1" {
		t.Fatalf("kids: old %s, new %s", kid(t, old), kid(t, fresh))
	}
	ctx := context.Background()
	for _, tok := range []string{old, fresh} {
		if _, err := h.verifier().VerifyToken(ctx, tok); err != nil {
			t.Errorf("token with kid %s: %v", kid(t, tok), err)
		}
	}
	// Once the old key is deleted it is no longer served and its tokens
	// no longer verify (they had expired anyway).
	h.clock.Set(deletes)
	v := h.verifier()
	if _, err := v.VerifyToken(ctx, old); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Errorf("old token after deletes_at: %v", err)
	}
}

func kid(t *testing.T, tok string) string {
	t.Helper()
	hdr, err := decodeSegment(tok, 0)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil || h.Alg != "HS512" {
		t.Fatalf("header %s: %v", hdr, err)
	}
	return h.Kid
}

func ownerSubdomain(slug string) issueBody {
	return issueBody{
		AppRequest: appurl.Request{
			AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: "alice",
			WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: slug,
		},
		PathAppBaseURL: proxyAccessURL,
		AppHostname:    proxyWildcard,
	}
}
