package tokens

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func mustKey(t testing.TB, f Feature, seq int32) Key {
	t.Helper()
	n, _ := f.secretLen()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(f, hex.EncodeToString(b), seq, now.Add(-time.Hour), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var subReq = appurl.Request{AccessMethod: appurl.AccessMethodSubdomain, BasePath: "/", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"}

func sampleToken() SignedToken {
	return SignedToken{
		Request:      subReq,
		UserID:       uuid.MustParse("11111111-1111-4111-8111-111111111111"),
		WorkspaceID:  uuid.MustParse("22222222-2222-4222-8222-222222222222"),
		AgentID:      uuid.MustParse("33333333-3333-4333-8333-333333333333"),
		AppURL:       "http://localhost:3000/?folder=/home/coder",
		CORSBehavior: "passthru",
		Expiry:       now.Add(time.Minute),
	}
}

func verifier(keys ...Key) *Verifier {
	return &Verifier{Keys: NewKeySet(keys...).Source(func() time.Time { return now }), Now: func() time.Time { return now }}
}

func TestKeyValidity(t *testing.T) {
	k := Key{Feature: FeatureAppToken, Secret: []byte("s"), Sequence: 7}
	tests := []struct {
		name              string
		startsAt, deletes time.Time
		canSign, canVerif bool
	}{
		{"started, no deletion", now.Add(-time.Hour), time.Time{}, true, true},
		{"starts in the future: verify only (clock skew)", now.Add(time.Minute), time.Time{}, false, true},
		{"zero start: verify only", time.Time{}, time.Time{}, false, true},
		{"deleted", now.Add(-time.Hour), now, false, false},
		{"deletion scheduled later", now.Add(-time.Hour), now.Add(time.Second), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k.StartsAt, k.DeletesAt = tt.startsAt, tt.deletes
			if k.CanSign(now) != tt.canSign || k.CanVerify(now) != tt.canVerif {
				t.Fatalf("CanSign %v CanVerify %v, want %v %v", k.CanSign(now), k.CanVerify(now), tt.canSign, tt.canVerif)
			}
		})
	}
	if (Key{Feature: FeatureAppToken}).CanVerify(now) {
		t.Fatal("a key without secret verifies")
	}
}

func TestParseKey(t *testing.T) {
	good64 := strings.Repeat("ab", 64)
	good32 := strings.Repeat("cd", 32)
	tests := []struct {
		name    string
		f       Feature
		secret  string
		wantErr bool
	}{
		{"app token key", FeatureAppToken, good64, false},
		{"api key key", FeatureAPIKey, good32, false},
		{"wrong length for feature", FeatureAppToken, good32, true},
		{"not hex", FeatureAPIKey, strings.Repeat("zz", 32), true},
		{"unknown feature", Feature("oidc_convert"), good32, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKey(tt.f, tt.secret, 12, now, time.Time{})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, ErrBadKey) {
				t.Fatalf("error %v is not ErrBadKey", err)
			}
			if err == nil && k.KID() != "12" {
				t.Fatalf("kid %q", k.KID())
			}
		})
	}
}

func TestKeySet(t *testing.T) {
	old := mustKey(t, FeatureAppToken, 1)
	old.DeletesAt = now.Add(time.Hour)
	cur := mustKey(t, FeatureAppToken, 2)
	next := mustKey(t, FeatureAppToken, 3)
	next.StartsAt = now.Add(30 * time.Minute)
	gone := mustKey(t, FeatureAppToken, 0)
	gone.DeletesAt = now.Add(-time.Second)
	s := NewKeySet(old, cur, next, gone, mustKey(t, FeatureAPIKey, 2))

	if k, err := s.SigningKey(FeatureAppToken, now); err != nil || k.Sequence != 2 {
		t.Fatalf("signing key %v %v, want sequence 2 (3 has not started)", k.Sequence, err)
	}
	for _, kid := range []string{"1", "2", "3"} {
		if _, err := s.Lookup(FeatureAppToken, kid, now); err != nil {
			t.Errorf("kid %s: %v", kid, err)
		}
	}
	if _, err := s.Lookup(FeatureAppToken, "0", now); !errors.Is(err, ErrKeyNotUsable) {
		t.Errorf("deleted key: %v", err)
	}
	for _, kid := range []string{"9", "", "02", "+2", "2.0", "99999999999"} {
		if _, err := s.Lookup(FeatureAppToken, kid, now); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("kid %q: %v, want ErrUnknownKey", kid, err)
		}
	}
	if got := s.Keys(FeatureAppToken); len(got) != 4 || got[0].Sequence != 3 || got[3].Sequence != 0 {
		t.Errorf("Keys order: %v", got)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	k := mustKey(t, FeatureAppToken, 42)
	s, err := SignToken(k, sampleToken())
	if err != nil {
		t.Fatal(err)
	}
	got, err := verifier(k).VerifyToken(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleToken()
	if got.Request != want.Request || got.UserID != want.UserID || got.WorkspaceID != want.WorkspaceID ||
		got.AgentID != want.AgentID || got.AppURL != want.AppURL || got.CORSBehavior != want.CORSBehavior || !got.Expiry.Equal(want.Expiry) {
		t.Fatalf("round trip: got %+v want %+v", got, want)
	}
}

// TestTokenWireFormat pins what coderd writes: a protected header with
// alg HS512 and kid, and the payload's JSON names.
func TestTokenWireFormat(t *testing.T) {
	k := mustKey(t, FeatureAppToken, 7)
	s, err := SignToken(k, sampleToken())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		t.Fatalf("not compact: %q", s)
	}
	var hdr map[string]any
	decodeSegment(t, parts[0], &hdr)
	if hdr["alg"] != "HS512" || hdr["kid"] != "7" {
		t.Fatalf("header %v", hdr)
	}
	var payload map[string]any
	decodeSegment(t, parts[1], &payload)
	for _, name := range []string{"exp", "request", "user_id", "workspace_id", "agent_id", "app_url", "cors_behavior"} {
		if _, ok := payload[name]; !ok {
			t.Errorf("payload lacks %q: %v", name, payload)
		}
	}
	if exp, ok := payload["exp"].(float64); !ok || int64(exp) != now.Add(time.Minute).Unix() {
		t.Errorf("exp %v", payload["exp"])
	}
	for _, absent := range []string{"iss", "aud", "nbf", "iat", "jti", "sub", "expiry"} {
		if _, ok := payload[absent]; ok {
			t.Errorf("payload has %q, coderd sets only exp", absent)
		}
	}
	req := payload["request"].(map[string]any)
	for _, name := range []string{"access_method", "base_path", "app_prefix", "username_or_id", "workspace_name_or_id", "agent_name_or_id", "app_slug_or_port"} {
		if _, ok := req[name]; !ok {
			t.Errorf("request lacks %q: %v", name, req)
		}
	}
	if len(req) != 7 {
		t.Errorf("request has %d fields, want coderd's 7: %v", len(req), req)
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func encodeSegment(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerifyRejects(t *testing.T) {
	k := mustKey(t, FeatureAppToken, 7)
	v := verifier(k)
	good, _ := SignToken(k, sampleToken())
	parts := strings.Split(good, ".")

	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	expired := sampleToken()
	expired.Expiry = now.Add(-61 * time.Second)
	expiredTok, _ := SignToken(k, expired)
	withinLeeway := sampleToken()
	withinLeeway.Expiry = now.Add(-59 * time.Second)
	leewayTok, _ := SignToken(k, withinLeeway)
	otherKey := mustKey(t, FeatureAppToken, 7)
	forged, _ := SignToken(otherKey, sampleToken())
	unknownKid := mustKey(t, FeatureAppToken, 8)
	unknownTok, _ := SignToken(unknownKid, sampleToken())
	badReq := sampleToken()
	badReq.Request.UsernameOrID = "me"
	badReqTok, _ := SignToken(k, badReq)
	noExp := signCompact(t, jose.HS512, k.Secret, "7", []byte(`{"request":{"access_method":"subdomain","base_path":"/","username_or_id":"a","workspace_name_or_id":"b","app_slug_or_port":"c"}}`))
	// Two values for one claim: which one counts would depend on the
	// parser, so neither does.
	dupExp := signCompact(t, jose.HS512, k.Secret, "7", []byte(fmt.Sprintf(`{"exp":%d,"exp":%d,"request":{"access_method":"subdomain","base_path":"/","username_or_id":"a","workspace_name_or_id":"b","app_slug_or_port":"c"}}`,
		now.Add(-time.Hour).Unix(), now.Add(time.Minute).Unix())))

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"alg none", encodeSegment(map[string]string{"alg": "none", "kid": "7"}) + "." + parts[1] + ".", ErrAlgorithm},
		{"HS256 with the same secret", signCompact(t, jose.HS256, k.Secret, "7", payload), ErrAlgorithm},
		{"RS256", signCompact(t, jose.RS256, rsaKey, "7", payload), ErrAlgorithm},
		{"ES256", signCompact(t, jose.ES256, ecKey, "7", payload), ErrAlgorithm},
		{"no kid", signCompact(t, jose.HS512, k.Secret, "", payload), ErrMissingKID},
		{"unknown kid", unknownTok, ErrUnknownKey},
		{"forged with another secret under the same kid", forged, ErrSignature},
		{"tampered payload", parts[0] + "." + encodeSegment(map[string]any{"exp": now.Add(time.Hour).Unix(), "request": subReq}) + "." + parts[2], ErrSignature},
		{"expired beyond leeway", expiredTok, ErrExpired},
		{"no exp", noExp, ErrClaims},
		{"duplicate exp", dupExp, ErrClaims},
		{"request fails its check", badReqTok, ErrClaims},
		{"oversized", strings.Repeat("a", MaxTokenLen+1), ErrTooLarge},
		{"garbage", "hello", ErrMalformed},
		{"empty", "", ErrMalformed},
		{"JSON serialization", `{"payload":"e30","signatures":[]}`, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.VerifyToken(context.Background(), tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := v.VerifyToken(context.Background(), leewayTok); err != nil {
		t.Fatalf("a token 59 s past exp is within coderd's leeway: %v", err)
	}
}

func TestMatchesRequest(t *testing.T) {
	tok := SignedToken{Request: appurl.Request{AccessMethod: appurl.AccessMethodPath, BasePath: "/@alice/dev.main/apps/code", UsernameOrID: "alice", WorkspaceNameOrID: "dev", AgentNameOrID: "main", AppSlugOrPort: "code"}}
	base := tok.Request
	base.BasePath += "/"
	if !tok.MatchesRequest(base) {
		t.Fatal("base paths differing by a trailing slash must match")
	}
	mutations := map[string]func(*appurl.Request){
		"access method": func(r *appurl.Request) { r.AccessMethod = appurl.AccessMethodSubdomain },
		"base path":     func(r *appurl.Request) { r.BasePath = "/@alice/dev.main/apps/other/" },
		"prefix":        func(r *appurl.Request) { r.Prefix = "x---" },
		"user":          func(r *appurl.Request) { r.UsernameOrID = "bob" },
		"user case":     func(r *appurl.Request) { r.UsernameOrID = "Alice" },
		"workspace":     func(r *appurl.Request) { r.WorkspaceNameOrID = "prod" },
		"agent":         func(r *appurl.Request) { r.AgentNameOrID = "" },
		"app":           func(r *appurl.Request) { r.AppSlugOrPort = "8080" },
	}
	for name, mut := range mutations {
		r := base
		mut(&r)
		if tok.MatchesRequest(r) {
			t.Errorf("%s differs but the token matches", name)
		}
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	k := mustKey(t, FeatureAPIKey, 5)
	s, err := EncryptAPIKey(k, "AbCdEfGhIj-0123456789abcdefghijk", now)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(s, "."); n != 4 {
		t.Fatalf("not a compact JWE: %d dots", n)
	}
	var hdr map[string]any
	decodeSegment(t, strings.Split(s, ".")[0], &hdr)
	if hdr["alg"] != "A256GCMKW" || hdr["enc"] != "A256GCM" || hdr["zip"] != "DEF" || hdr["kid"] != "5" {
		t.Fatalf("header %v", hdr)
	}
	got, err := verifier(k).DecryptAPIKey(context.Background(), s)
	if err != nil || got != "AbCdEfGhIj-0123456789abcdefghijk" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestDecryptRejects(t *testing.T) {
	k := mustKey(t, FeatureAPIKey, 5)
	v := verifier(k)
	encrypt := func(keyAlg jose.KeyAlgorithm, enc jose.ContentEncryption, key any, kid string, claims map[string]any) string {
		e, err := jose.NewEncrypter(enc, jose.Recipient{Algorithm: keyAlg, Key: key, KeyID: kid}, &jose.EncrypterOptions{Compression: jose.DEFLATE})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(claims)
		o, err := e.Encrypt(b)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := o.CompactSerialize()
		return c
	}
	good := func() map[string]any {
		return map[string]any{"api_key": "k", "iss": "coderd", "aud": []string{"wsproxy"}, "exp": now.Add(time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix()}
	}
	with := func(k string, v any) map[string]any {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	other := mustKey(t, FeatureAPIKey, 5)
	unknown := mustKey(t, FeatureAPIKey, 6)
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"dir with the same key", encrypt(jose.DIRECT, jose.A256GCM, k.Secret, "5", good()), ErrMalformed},
		{"A128GCM content", encrypt(jose.A256GCMKW, jose.A128GCM, k.Secret, "5", good()), ErrMalformed},
		{"A256KW key wrap", encrypt(jose.A256KW, jose.A256GCM, k.Secret, "5", good()), ErrMalformed},
		{"no kid", encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "", good()), ErrMissingKID},
		{"unknown kid", encrypt(jose.A256GCMKW, jose.A256GCM, unknown.Secret, "6", good()), ErrUnknownKey},
		{"another key under the same kid", encrypt(jose.A256GCMKW, jose.A256GCM, other.Secret, "5", good()), ErrSignature},
		{"wrong issuer", encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "5", with("iss", "evil")), ErrClaims},
		{"wrong audience", encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "5", with("aud", []string{"coderd"})), ErrClaims},
		{"no nbf", encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "5", with("nbf", nil)), ErrClaims},
		{"expired", encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "5", with("exp", now.Add(-2*time.Minute).Unix())), ErrExpired},
		{"not yet valid", encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "5", with("nbf", now.Add(2*time.Minute).Unix())), ErrExpired},
		{"empty api key", encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "5", with("api_key", "")), ErrClaims},
		{"empty", "", ErrMalformed},
		{"oversized", strings.Repeat("a", MaxTokenLen+1), ErrTooLarge},
		{"a JWS", func() string { s, _ := SignToken(mustKey(t, FeatureAppToken, 5), sampleToken()); return s }(), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.DecryptAPIKey(context.Background(), tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	single := with("aud", "wsproxy")
	if _, err := v.DecryptAPIKey(context.Background(), encrypt(jose.A256GCMKW, jose.A256GCM, k.Secret, "5", single)); err != nil {
		t.Fatalf("a single-string audience is valid JSON for aud: %v", err)
	}
}

func TestCookieNames(t *testing.T) {
	if got := SubdomainAppSessionCookie("*.apps.example.com"); got != "coder_subdomain_app_session_token_a303882f63a443902998796bd7724f3d" {
		t.Fatalf("known vector: got %s", got)
	}
	for w, want := range map[string]string{"*.apps.x.com": ".apps.x.com", "*--apps.x.com": ".x.com", "*.apps.x.com:8443": ".apps.x.com"} {
		if got := SubdomainCookieDomain(w); got != want {
			t.Errorf("domain of %s = %s, want %s", w, got, want)
		}
	}
}

func TestStripCoderCookies(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a=1; coder_session_token=x; b=2", "a=1; b=2"},
		{"coder_signed_app_token=x; coder_path_app_session_token=y; oauth_state=s; oauth_redirect=r", ""},
		{"coder_subdomain_app_session_token_a303882f63a443902998796bd7724f3d=k;theme=dark", "theme=dark"},
		{"coder_subdomain_app_session_token_any=k; x=\"quoted; value\"", "x=\"quoted; value\""},
		{"my_coder_session_token=keep; coder_session_tokenX=keep", "my_coder_session_token=keep; coder_session_tokenX=keep"},
		{"  spaced = value ;;; other=1", "spaced = value; other=1"},
		{"__Host-coder_session_token=x; a=1; __Host-coder_signed_app_token=y; __Host-other=z", "a=1; __Host-other=z"},
		{"a=1;\tcoder_session_token=x\t", "a=1"},
		// Only ASCII white space is trimmed: a pair is never altered.
		{"\u2003b=1; coder_session_token=x", "\u2003b=1"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := StripCoderCookies(tt.in); got != tt.want {
			t.Errorf("Strip(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCookieAttributes(t *testing.T) {
	cfg := CookieConfig{Secure: true, SameSite: http.SameSiteLaxMode}
	exp := now.Add(time.Minute)
	c := cfg.SignedTokenCookie("tok", "/@a/b/apps/c/", exp)
	if c.Name != SignedAppTokenCookie || c.Path != "/@a/b/apps/c/" || !c.Expires.Equal(exp) || c.Domain != "" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode {
		t.Errorf("signed token cookie %s", c)
	}
	c = cfg.SubdomainAppSessionCookie("*.apps.example.com", "key")
	line := c.String()
	if !strings.Contains(line, "Domain=apps.example.com") || !strings.Contains(line, "Path=/") || strings.Contains(line, "Max-Age") || strings.Contains(line, "Expires") || !strings.Contains(line, "HttpOnly") {
		t.Errorf("subdomain session cookie %s", line)
	}
	c = cfg.PathAppSessionCookie("key")
	if c.Domain != "" || c.Path != "/" || c.Name != PathAppSessionCookie {
		t.Errorf("path session cookie %s", c)
	}
}

func TestFindToken(t *testing.T) {
	k := mustKey(t, FeatureAppToken, 7)
	v := verifier(k)
	sign := func(r appurl.Request) string {
		tok := sampleToken()
		tok.Request = r
		s, err := SignToken(k, tok)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	other := subReq
	other.AppSlugOrPort = "other"
	term := appurl.Request{AccessMethod: appurl.AccessMethodTerminal, BasePath: "/api/v2/workspaceagents/33333333-3333-4333-8333-333333333333/pty", AgentNameOrID: "33333333-3333-4333-8333-333333333333"}
	cookie := func(vals ...string) []*http.Cookie {
		var cs []*http.Cookie
		for _, v := range vals {
			cs = append(cs, &http.Cookie{Name: SignedAppTokenCookie, Value: v})
		}
		return cs
	}
	q := func(v string) url.Values { return url.Values{SignedAppTokenQueryParam: {v}} }
	tests := []struct {
		name    string
		query   url.Values
		cookies []*http.Cookie
		req     appurl.Request
		want    bool
	}{
		{"cookie matches", nil, cookie(sign(subReq)), subReq, true},
		{"second cookie matches", nil, cookie(sign(other), "junk", sign(subReq)), subReq, true},
		{"fifth cookie is never looked at", nil, cookie("a", "b", "c", "d", sign(subReq)), subReq, false},
		{"terminal token in the query", q(sign(term)), nil, term, true},
		{"app token in the query ends the search", q(sign(subReq)), cookie(sign(subReq)), subReq, false},
		{"any query parameter confines cookies to terminal tokens", q("junk"), cookie(sign(subReq)), subReq, false},
		{"bad query token, good terminal cookie", q("junk"), cookie(sign(term)), term, true},
		{"nothing", nil, nil, subReq, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, ok := v.FindToken(context.Background(), tt.query, tt.cookies, tt.req)
			if ok != tt.want {
				t.Fatalf("found %v, want %v", ok, tt.want)
			}
		})
	}
}

func TestSessionTokenOrder(t *testing.T) {
	app := SubdomainAppSessionCookie("*.apps.example.com")
	ck := func(pairs ...string) []*http.Cookie {
		var cs []*http.Cookie
		for i := 0; i+1 < len(pairs); i += 2 {
			cs = append(cs, &http.Cookie{Name: pairs[i], Value: pairs[i+1]})
		}
		return cs
	}
	all := http.Header{"Coder-Session-Token": {"hdr"}, "Authorization": {"Bearer bear"}}
	tests := []struct {
		name    string
		cookies []*http.Cookie
		query   url.Values
		header  http.Header
		want    string
	}{
		{"app cookie first", ck(SessionTokenCookie, "generic", app, "app"), url.Values{"coder_session_token": {"q"}}, all, "app"},
		{"then generic cookie", ck(SessionTokenCookie, "generic"), url.Values{"coder_session_token": {"q"}}, all, "generic"},
		{"then query", nil, url.Values{"coder_session_token": {"q"}}, all, "q"},
		{"then header", nil, nil, all, "hdr"},
		{"then bearer", nil, nil, http.Header{"Authorization": {"bearer bear"}}, "bear"},
		{"basic auth is not a session", nil, nil, http.Header{"Authorization": {"Basic eDp5"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SessionToken(app, tt.cookies, tt.query, tt.header); got != tt.want {
				t.Fatalf("got %q want %q", got, tt.want)
			}
		})
	}
}

func TestVerifiedCacheHonoursExpiry(t *testing.T) {
	k := mustKey(t, FeatureAppToken, 7)
	clock := now
	v := &Verifier{Keys: NewKeySet(k).Source(func() time.Time { return clock }), Now: func() time.Time { return clock }}
	s, _ := SignToken(k, sampleToken())
	for i := 0; i < 2; i++ {
		if _, err := v.VerifyToken(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	clock = now.Add(2*time.Minute + time.Second)
	if _, err := v.VerifyToken(context.Background(), s); !errors.Is(err, ErrExpired) {
		t.Fatalf("a cached token outlived its expiry: %v", err)
	}
}

// swapSource is a KeySource whose key set a test can replace, as the
// primary client's cache replaces it on a refresh.
type swapSource struct {
	set *KeySet
}

func (s *swapSource) VerifyingKey(_ context.Context, f Feature, kid string) (Key, error) {
	return s.set.Lookup(f, kid, now)
}

// TestVerifiedCacheFollowsTheKeys: a token that verified (and is cached)
// stops verifying as soon as the primary withdraws its key, or replaces
// the secret under the same kid, instead of staying valid until it
// expires; a key that is still there keeps serving from the cache.
func TestVerifiedCacheFollowsTheKeys(t *testing.T) {
	k7 := mustKey(t, FeatureAppToken, 7)
	k8 := mustKey(t, FeatureAppToken, 8)
	src := &swapSource{set: NewKeySet(k7, k8)}
	v := &Verifier{Keys: src, Now: func() time.Time { return now }}
	s7, _ := SignToken(k7, sampleToken())
	s8, _ := SignToken(k8, sampleToken())
	for _, s := range []string{s7, s8, s7, s8} {
		if _, err := v.VerifyToken(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}

	// Key 7 withdrawn: its cached token fails, key 8's still verifies.
	src.set = NewKeySet(k8)
	if _, err := v.VerifyToken(context.Background(), s7); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("token of a withdrawn key: %v, want ErrUnknownKey", err)
	}
	if _, err := v.VerifyToken(context.Background(), s8); err != nil {
		t.Fatalf("token of a key still held: %v", err)
	}

	// Key 8's secret replaced under the same kid: its token is checked
	// again, and fails.
	k8b := mustKey(t, FeatureAppToken, 8)
	src.set = NewKeySet(k8b)
	if _, err := v.VerifyToken(context.Background(), s8); !errors.Is(err, ErrSignature) {
		t.Fatalf("token signed with a replaced secret: %v, want ErrSignature", err)
	}
}

func TestVerifiedCacheIsBounded(t *testing.T) {
	var c verifiedCache
	c.maxEntries = 3
	for i := 0; i < 10; i++ {
		c.put(strings.Repeat("x", i+1), cachedToken{until: now.Add(time.Minute)}, now)
		if len(c.entries) > 3 {
			t.Fatalf("%d entries", len(c.entries))
		}
	}
}

// TestAPIKeyWireFormat pins the JWE as coderd writes it: five compact
// segments, a protected header with alg A256GCMKW, enc A256GCM, zip DEF and
// kid, and a payload of api_key, iss, aud, exp and nbf.
func TestAPIKeyWireFormat(t *testing.T) {
	k := mustKey(t, FeatureAPIKey, 3)
	s, err := EncryptAPIKey(k, "id-secret", now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 5 {
		t.Fatalf("not compact JWE: %d segments", len(parts))
	}
	var hdr map[string]any
	decodeSegment(t, parts[0], &hdr)
	for name, want := range map[string]string{"alg": "A256GCMKW", "enc": "A256GCM", "zip": "DEF", "kid": "3"} {
		if hdr[name] != want {
			t.Errorf("header %s = %v, want %q (header %v)", name, hdr[name], want, hdr)
		}
	}
	obj, err := jose.ParseEncryptedCompact(s, []jose.KeyAlgorithm{jose.A256GCMKW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := obj.Decrypt(k.Secret)
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]any
	if err := json.Unmarshal(plain, &payload); err != nil {
		t.Fatal(err)
	}
	if payload["api_key"] != "id-secret" || payload["iss"] != "coderd" {
		t.Errorf("payload %v", payload)
	}
	// go-jose (coderd's library too) writes a one-element audience as a
	// bare string.
	if payload["aud"] != "wsproxy" {
		t.Errorf("aud %v, want \"wsproxy\"", payload["aud"])
	}
	if exp, _ := payload["exp"].(float64); int64(exp) != now.Add(time.Minute).Unix() {
		t.Errorf("exp %v", payload["exp"])
	}
	if nbf, _ := payload["nbf"].(float64); int64(nbf) != now.Add(-time.Minute).Unix() {
		t.Errorf("nbf %v", payload["nbf"])
	}
}

// TestDecryptCoderdStyleJWE decrypts a JWE built the way coderd's jwtutils
// builds it (kid as an extra protected header, string audience accepted).
func TestDecryptCoderdStyleJWE(t *testing.T) {
	k := mustKey(t, FeatureAPIKey, 12)
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.A256GCMKW, Key: k.Secret},
		&jose.EncrypterOptions{Compression: jose.DEFLATE, ExtraHeaders: map[jose.HeaderKey]any{"kid": "12"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, claims := range map[string]string{
		"audience list":   `{"iss":"coderd","aud":["other","wsproxy"],"exp":%d,"nbf":%d,"api_key":"abc-def"}`,
		"audience string": `{"iss":"coderd","aud":"wsproxy","exp":%d,"nbf":%d,"api_key":"abc-def"}`,
	} {
		obj, err := enc.Encrypt([]byte(fmt.Sprintf(claims, now.Add(time.Minute).Unix(), now.Add(-time.Minute).Unix())))
		if err != nil {
			t.Fatal(err)
		}
		s, err := obj.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		got, err := verifier(k).DecryptAPIKey(context.Background(), s)
		if err != nil || got != "abc-def" {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
}

// TestVerifyTokenIgnoresUnknownClaims: a newer coderd may add claims (for
// example the visitor's identity for the X-Coder-User-* headers); a token
// carrying members wsedge does not know still verifies, with the known
// claims intact.
func TestVerifyTokenIgnoresUnknownClaims(t *testing.T) {
	k := mustKey(t, FeatureAppToken, 7)
	good, _ := SignToken(k, sampleToken())
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(good, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	claims["visitor_username"] = "alice"
	claims["visitor_email"] = "alice@example.com"
	claims["future"] = map[string]any{"nested": []any{1, "x"}}
	extended, _ := json.Marshal(claims)
	raw := signCompact(t, jose.HS512, k.Secret, k.KID(), extended)
	tok, err := verifier(k).VerifyToken(context.Background(), raw)
	if err != nil {
		t.Fatalf("token with extra claims: %v", err)
	}
	if want := sampleToken(); tok.UserID != want.UserID || tok.AgentID != want.AgentID || tok.AppURL != want.AppURL || tok.Request != want.Request.Normalize() {
		t.Fatalf("claims changed: %+v", tok)
	}
}

// signCompact signs payload as a compact JWS with alg and key, with a kid
// header unless kid is empty: tokens as an attacker or a future coderd
// would write them.
func signCompact(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, payload []byte) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	c, err := o.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
