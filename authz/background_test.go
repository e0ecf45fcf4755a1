package authz

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

const subHost = "code--main--dev--alice.apps.example.com"

// TestExpiredTokenWithSessionIsReissuedForBackgroundRequests: a page's
// fetch/XHR after the one-minute token expired, with the session still
// valid, gets the app and a fresh token cookie — no redirect.
func TestExpiredTokenWithSessionIsReissuedForBackgroundRequests(t *testing.T) {
	for _, mode := range []string{"cors", "same-origin", "no-cors", "websocket", "navigate", ""} {
		t.Run("Sec-Fetch-Mode "+mode, func(t *testing.T) {
			f := newFixture(t, nil)
			expired := f.sign(t, subReq, func(s *tokens.SignedToken) { s.Expiry = testNow.Add(-5 * time.Minute) })
			cookie := tokens.SignedAppTokenCookie + "=" + expired + "; " + tokens.SubdomainAppSessionCookie(wildcard) + "=session-1"
			in := request(subHost, "/api/data", "Cookie", cookie, "Accept", "application/json")
			if mode != "" {
				in.Header.Set("Sec-Fetch-Mode", mode)
			}
			d := f.svc.Check(context.Background(), in)
			if !d.Allow || d.Outcome != "allow_issued" {
				t.Fatalf("got allow=%v status=%d outcome=%s, want the app with a new token", d.Allow, d.Status, d.Outcome)
			}
			if f.issuer.last.SessionToken != "session-1" {
				t.Errorf("issued for session %q", f.issuer.last.SessionToken)
			}
			set := d.ResponseHeader.Get("Set-Cookie")
			if !strings.HasPrefix(set, tokens.SignedAppTokenCookie+"=") || strings.Contains(set, expired) {
				t.Errorf("Set-Cookie %q, want a new signed token", set)
			}
		})
	}
}

// TestSessionGoneBackgroundRequestGets401: without a session the primary
// answers with its login redirect. A background request (Sec-Fetch-Mode
// other than navigate) cannot follow it, so it gets 401 JSON naming the
// sign-in URL instead; navigations, and clients that do not say, keep the
// 303.
func TestSessionGoneBackgroundRequestGets401(t *testing.T) {
	const login = "https://coder.example.com/api/v2/applications/auth-redirect?redirect_uri=https%3A%2F%2Fcode--main--dev--alice.apps.example.com%2Fapi%2Fdata"
	relay := func() *RelayedResponse {
		h := http.Header{}
		h.Set("Location", login)
		h.Set("Content-Type", "text/html; charset=utf-8")
		return &RelayedResponse{Status: http.StatusSeeOther, Header: h, Body: []byte("<a>See Other</a>")}
	}
	for _, tt := range []struct {
		mode    string
		want401 bool
	}{
		{"cors", true}, {"same-origin", true}, {"no-cors", true}, {"websocket", true}, {"CORS", true},
		{"navigate", false}, {"nested-navigate", false}, {"", false},
	} {
		t.Run("Sec-Fetch-Mode "+tt.mode, func(t *testing.T) {
			f := newFixture(t, nil)
			f.issuer.relay = relay()
			expired := f.sign(t, subReq, func(s *tokens.SignedToken) { s.Expiry = testNow.Add(-5 * time.Minute) })
			in := request(subHost, "/api/data", "Cookie", tokens.SignedAppTokenCookie+"="+expired)
			if tt.mode != "" {
				in.Header.Set("Sec-Fetch-Mode", tt.mode)
			}
			d := f.svc.Check(context.Background(), in)
			if d.Allow {
				t.Fatal("allowed without a session")
			}
			if !tt.want401 {
				if d.Status != http.StatusSeeOther || d.Header.Get("Location") != login {
					t.Fatalf("status %d Location %q, want Coder's 303 to %s", d.Status, d.Header.Get("Location"), login)
				}
				return
			}
			if d.Status != http.StatusUnauthorized || d.Header.Get("Location") != "" {
				t.Fatalf("status %d Location %q, want 401 without a redirect", d.Status, d.Header.Get("Location"))
			}
			if d.Header.Get("Content-Type") != "application/json; charset=utf-8" || d.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v, want JSON, no-store", d.Header)
			}
			var body struct{ Message, Detail, LoginURL string }
			var raw map[string]any
			if err := json.Unmarshal(d.Body, &raw); err != nil {
				t.Fatalf("body %q: %v", d.Body, err)
			}
			body.Message, _ = raw["message"].(string)
			body.Detail, _ = raw["detail"].(string)
			body.LoginURL, _ = raw["login_url"].(string)
			if body.Message == "" || body.LoginURL != login || !strings.Contains(body.Detail, login) {
				t.Errorf("body %s, want Coder's {message, detail} naming %s, and login_url", d.Body, login)
			}
		})
	}
	// Other answers of the primary are relayed as they are, whatever the
	// mode: a 404 "Application Not Found" page is not a sign-in.
	f := newFixture(t, nil)
	f.issuer.relay = &RelayedResponse{Status: http.StatusNotFound, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte("Application Not Found")}
	d := f.svc.Check(context.Background(), request(subHost, "/", "Sec-Fetch-Mode", "cors"))
	if d.Status != http.StatusNotFound || string(d.Body) != "Application Not Found" {
		t.Errorf("404 relay for a background request: status %d body %q", d.Status, d.Body)
	}
}
