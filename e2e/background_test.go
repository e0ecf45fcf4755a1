package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

// TestBackgroundRequestsAfterTokenExpiry: the one-minute signed token
// expires under a long-lived page. Through real Envoy: with the session
// still valid a page's fetch (Sec-Fetch-Mode: cors) gets the app and a new
// token cookie, no redirect; once the session is gone it gets 401 JSON
// naming the sign-in URL (a 303 to the dashboard would end in a CORS
// error), while a navigation keeps Coder's 303.
func TestBackgroundRequestsAfterTokenExpiry(t *testing.T) {
	fp := startEdge(t, WithDev())
	h := newHostile(t, fp)
	session := fp.newSession(t)
	appKey, err := fp.dev.Primary.SigningKey(tokens.FeatureAppToken)
	if err != nil {
		t.Fatal(err)
	}
	_, claims := h.genuineToken("http://"+codeHost+"/echo", session, appKey)
	claims.Expiry = time.Now().Add(-3 * time.Minute)
	expired, err := tokens.SignToken(appKey, claims)
	if err != nil {
		t.Fatal(err)
	}
	expiredCookie := tokens.SignedAppTokenCookie + "=" + expired
	sessionCookie := tokens.SubdomainAppSessionCookie(wildcardHost) + "=" + session
	fetchHeaders := func(cookie string) http.Header {
		return http.Header{"Cookie": {cookie}, "Sec-Fetch-Mode": {"cors"}, "Sec-Fetch-Dest": {"empty"}, "Accept": {"application/json"}}
	}

	t.Run("session alive: re-issued silently", func(t *testing.T) {
		a := h.do("GET", "http://"+codeHost+"/echo", fetchHeaders(expiredCookie+"; "+sessionCookie))
		fresh := setCookieValue(a.header, tokens.SignedAppTokenCookie)
		if a.status != http.StatusOK || !reachedApp(a.body) {
			t.Fatalf("status %d Location %q, want the app", a.status, a.header.Get("Location"))
		}
		if fresh == "" || fresh == expired {
			t.Errorf("no new signed token cookie: %q", a.header.Values("Set-Cookie"))
		}
	})

	// A page's fetch to its own app takes the same-origin warm route;
	// the dialer asks authz about the expired token as for a navigation,
	// so the page gets its answer in one round trip, CORS included.
	t.Run("same-origin fetch, session alive: re-issued silently", func(t *testing.T) {
		hdr := fetchHeaders(expiredCookie + "; " + sessionCookie)
		hdr.Set("Origin", "http://"+codeHost)
		hdr.Set("Sec-Fetch-Site", "same-origin")
		a := h.do("POST", "http://"+codeHost+"/echo", hdr)
		if a.status != http.StatusOK || !reachedApp(a.body) {
			t.Fatalf("status %d Location %q, want the app without a bounce", a.status, a.header.Get("Location"))
		}
		if fresh := setCookieValue(a.header, tokens.SignedAppTokenCookie); fresh == "" || fresh == expired {
			t.Errorf("no new signed token cookie: %q", a.header.Values("Set-Cookie"))
		}
		if got := a.header.Get("Access-Control-Allow-Origin"); got != "http://"+codeHost {
			t.Errorf("Access-Control-Allow-Origin %q, want the page's own origin", got)
		}
	})

	// A browser's websocket (Origin, no Sec-Fetch-*) takes the websocket
	// twin: the dialer asks authz about the expired token and the 101
	// brings the new one (a redirect would fail the handshake).
	t.Run("browser websocket, session alive: opens with a new token", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ws, res, err := fp.dialWebsocket(ctx, "ws://"+codeHost+"/ws", http.Header{
			"Cookie": {expiredCookie + "; " + sessionCookie}, "Origin": {"http://" + codeHost},
		})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer ws.CloseNow()
		if fresh := setCookieValue(res.Header, tokens.SignedAppTokenCookie); fresh == "" || fresh == expired {
			t.Errorf("no new signed token cookie on the 101: %q", res.Header.Values("Set-Cookie"))
		}
		if err := echoOnce(ctx, ws, "after expiry"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("session gone: 401 JSON naming the sign-in URL", func(t *testing.T) {
		for _, cookie := range []string{expiredCookie, expiredCookie + "; " + tokens.SubdomainAppSessionCookie(wildcardHost) + "=deleted-session"} {
			a := h.do("GET", "http://"+codeHost+"/api/data", fetchHeaders(cookie))
			if a.status != http.StatusUnauthorized || a.header.Get("Location") != "" || reachedApp(a.body) {
				t.Fatalf("status %d Location %q, want 401 and no redirect", a.status, a.header.Get("Location"))
			}
			if !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") || a.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Content-Type %q Cache-Control %q, want JSON, no-store", a.header.Get("Content-Type"), a.header.Get("Cache-Control"))
			}
			var body struct {
				Message  string `json:"message"`
				Detail   string `json:"detail"`
				LoginURL string `json:"login_url"`
			}
			if err := json.Unmarshal([]byte(a.body), &body); err != nil {
				t.Fatalf("body %q: %v", a.body, err)
			}
			if !strings.HasPrefix(body.LoginURL, "http://"+dashboardHost+"/api/v2/applications/auth-redirect?") || !strings.Contains(body.Detail, body.LoginURL) || body.Message == "" {
				t.Errorf("body %+v, want the dashboard's auth-redirect URL in login_url and detail", body)
			}
		}
	})

	t.Run("navigations keep the 303", func(t *testing.T) {
		for _, mode := range []string{"navigate", ""} {
			hdr := http.Header{"Cookie": {expiredCookie}}
			if mode != "" {
				hdr.Set("Sec-Fetch-Mode", mode)
			}
			a := h.do("GET", "http://"+codeHost+"/api/data", hdr)
			if a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Location"), "/api/v2/applications/auth-redirect") {
				t.Errorf("Sec-Fetch-Mode %q: status %d Location %q, want Coder's 303", mode, a.status, a.header.Get("Location"))
			}
		}
	})
}
