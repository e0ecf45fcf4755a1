package authz

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

// JWKSPath is where JWKSHandler answers (envoy.JWKSPath).
const JWKSPath = "/jwks.json"

// jwk is one symmetric key as Envoy's jwt_authn reads it.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	K   string `json:"k"`
}

// JWKS renders the app-token keys that can verify at now as a JSON Web
// Key Set for Envoy's jwt_authn: kty "oct", kid = the key's sequence (the
// kid coderd signs with), alg HS512, k = the raw secret, base64url
// without padding. Keys that have not started signing yet are included,
// so Envoy knows a key before its first token; deleted keys are not.
//
// The document holds the HMAC secrets: whoever reads it can mint tokens.
// Serve it only where Envoy alone can reach it.
func JWKS(keys []tokens.Key, now time.Time) ([]byte, error) {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range keys {
		if k.Feature != tokens.FeatureAppToken || !k.CanVerify(now) {
			continue
		}
		set.Keys = append(set.Keys, jwk{Kty: "oct", Kid: k.KID(), Alg: "HS512", K: base64.RawURLEncoding.EncodeToString(k.Secret)})
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("authz: jwks: %w", err)
	}
	return b, nil
}

// KeyLister lists the cached keys of a feature (the primary client's key
// cache).
type KeyLister interface {
	Keys(f tokens.Feature) []tokens.Key
}

// JWKSHandler serves JWKS at JWKSPath from the current key cache, never
// cached by intermediaries (Envoy refetches on its own schedule). Any
// other path is 404.
func JWKSHandler(keys KeyLister, now func() time.Time, log *slog.Logger) http.Handler {
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != JWKSPath {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, err := JWKS(keys.Keys(tokens.FeatureAppToken), now())
		if err != nil {
			log.Error("cannot render the JWKS", "error", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
}
