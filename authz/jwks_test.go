package authz

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

type fixedKeys []tokens.Key

func (k fixedKeys) Keys(f tokens.Feature) []tokens.Key {
	var out []tokens.Key
	for _, key := range k {
		if key.Feature == f {
			out = append(out, key)
		}
	}
	return out
}

// TestJWKS checks the key set Envoy gets: every app-token key that can
// verify (one not signing yet included), none deleted, no API-key keys,
// kid = sequence, the raw secret base64url-encoded.
func TestJWKS(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	secret := func(b byte) []byte { return bytes.Repeat([]byte{b}, 64) }
	keys := fixedKeys{
		{Feature: tokens.FeatureAppToken, Secret: secret(1), Sequence: 7, StartsAt: now.Add(-time.Hour)},
		{Feature: tokens.FeatureAppToken, Secret: secret(2), Sequence: 8, StartsAt: now.Add(time.Hour)},                             // not signing yet
		{Feature: tokens.FeatureAppToken, Secret: secret(3), Sequence: 6, StartsAt: now.Add(-2 * time.Hour), DeletesAt: now},        // deleted
		{Feature: tokens.FeatureAPIKey, Secret: bytes.Repeat([]byte{4}, 32), Sequence: 9, StartsAt: now.Add(-time.Hour)},            // other feature
		{Feature: tokens.FeatureAppToken, Secret: secret(5), Sequence: 5, StartsAt: now.Add(-3 * time.Hour), DeletesAt: now.Add(1)}, // deleting soon
	}
	srv := httptest.NewServer(JWKSHandler(keys, func() time.Time { return now }, slog.New(slog.DiscardHandler)))
	defer srv.Close()

	res, err := http.Get(srv.URL + JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d headers %v", res.StatusCode, res.Header)
	}
	var got struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	want := map[string][]byte{"7": secret(1), "8": secret(2), "5": secret(5)}
	if len(got.Keys) != len(want) {
		t.Fatalf("keys %s, want kids 7, 8 and 5", body)
	}
	for _, k := range got.Keys {
		if k["kty"] != "oct" || k["alg"] != "HS512" || len(k) != 4 {
			t.Errorf("key %v", k)
		}
		raw, err := base64.RawURLEncoding.DecodeString(k["k"])
		if err != nil || !bytes.Equal(raw, want[k["kid"]]) {
			t.Errorf("kid %q secret %q (%v)", k["kid"], k["k"], err)
		}
	}

	for _, path := range []string{"/", "/jwks", "/jwks.json/x"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, res.StatusCode)
		}
	}
	res, err = http.Post(srv.URL+JWKSPath, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", res.StatusCode)
	}
}

// TestJWKSEmpty: no key yet is an empty set, which Envoy accepts
// (Envoy treats it as a failed fetch: every token takes ext_authz).
func TestJWKSEmpty(t *testing.T) {
	b, err := JWKS(nil, time.Now())
	if err != nil || string(b) != `{"keys":[]}` {
		t.Fatalf("%s %v", b, err)
	}
}
