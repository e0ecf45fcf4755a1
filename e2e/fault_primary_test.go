package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// shortLivedToken re-signs the signed app token browser holds for host
// with the primary's current key so that it stops verifying (exp plus
// go-jose's 1 min leeway, which coderd applies) in lifetime.
func shortLivedToken(t *testing.T, fp *edge, browser *http.Client, host string, lifetime time.Duration) string {
	t.Helper()
	c := cookieNamed(browser.Jar, "http://"+host+"/", tokens.SignedAppTokenCookie)
	if c == nil {
		t.Fatalf("no %s cookie for %s", tokens.SignedAppTokenCookie, host)
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 {
		t.Fatalf("signed token cookie is not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Request      appurl.Request `json:"request"`
		UserID       uuid.UUID      `json:"user_id"`
		WorkspaceID  uuid.UUID      `json:"workspace_id"`
		AgentID      uuid.UUID      `json:"agent_id"`
		AppURL       string         `json:"app_url"`
		CORSBehavior string         `json:"cors_behavior"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	key, err := fp.dev.Primary.SigningKey(tokens.FeatureAppToken)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokens.SignToken(key, tokens.SignedToken{
		Request: claims.Request, UserID: claims.UserID, WorkspaceID: claims.WorkspaceID, AgentID: claims.AgentID,
		AppURL: claims.AppURL, CORSBehavior: claims.CORSBehavior,
		Expiry: time.Now().Add(lifetime - time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// isBadGatewayPage: authz's 502 page for an unreachable primary, never an
// allow.
func isBadGatewayPage(a answer) bool {
	return a.err == nil && a.status == http.StatusBadGateway && strings.HasPrefix(a.ctype, "text/html") &&
		strings.Contains(a.body, "could not reach the Coder primary") && !isEcho(a.body)
}

// TestFaultPrimary: the primary slow, then down, then back, with warm
// browsers, a token close to its expiry, new sessions and an open app
// websocket; then its connections (the coordination streams among them)
// cut while it stays up.
func TestFaultPrimary(t *testing.T) {
	f := &faults{}
	fp := startEdge(t, withFaults(f), WithQuietLogs(), WithMetrics())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A warm browser: signed in, with token cookies for the code and echo
	// apps and an open echo websocket.
	fp.signInToApps(t)
	ws := fp.openEchoSocket(ctx, t, fp.browser)
	if err := ws.echo(ctx, "before"); err != nil {
		t.Fatal(err)
	}
	// Sessions made while the dashboard was up, used only once it is not.
	slowSession, downSession := fp.newSession(t), fp.newSession(t)
	// A user with nothing but a signed token that stops verifying soon.
	expiring := shortLivedToken(t, fp, fp.browser, codeHost, 6*time.Second)
	expiringAt := time.Now().Add(6 * time.Second)
	tokenOnly := http.Header{"Cookie": {tokens.SignedAppTokenCookie + "=" + expiring}}
	plain := fp.plainClient(t)

	t.Run("slow primary", func(t *testing.T) {
		f.slow.delay.Store(int64(time.Minute))
		defer f.slow.delay.Store(0)
		// A new session needs an issue call. authz stops waiting just
		// before Envoy's ext_authz timeout (2 s), so the user gets the 502
		// page in bounded time, never an allow and never Envoy's empty 503.
		a := fetch(plain, sessionApp, withSession(slowSession))
		if !isBadGatewayPage(a) || a.took > 2500*time.Millisecond {
			t.Errorf("new session against a slow primary: %v; want the 502 page within 2.5 s", a)
		}
		t.Logf("new session, slow primary: %d after %v", a.status, a.took.Round(time.Millisecond))
		if f.slow.held.Load() == 0 {
			t.Errorf("authz did not ask the primary")
		}
		// Warm cookies need no primary.
		if a := fetch(fp.browser, "http://"+codeHost+"/echo", nil); a.status != http.StatusOK || !isEcho(a.body) || a.took > time.Second {
			t.Errorf("warm browser against a slow primary: %v", a)
		}
	})

	t.Run("primary down", func(t *testing.T) {
		f.primaryLn.Down(t)
		a := fetch(plain, sessionApp, withSession(downSession))
		if !isBadGatewayPage(a) || a.took > 3*time.Second {
			t.Errorf("new session, primary down: %v; want the 502 page within 3 s", a)
		}
		if a := fetch(fp.browser, "http://"+codeHost+"/echo", nil); a.status != http.StatusOK || !isEcho(a.body) {
			t.Errorf("warm browser, primary down: %v", a)
		}
		// The open websocket runs over the tunnel the dialer already has.
		if err := ws.echo(ctx, "primary down"); err != nil {
			t.Errorf("open app websocket, primary down: %v", err)
		}
		// The short-lived token works until it expires, then the request
		// needs the primary: a 502 page, not an allow.
		if a := fetch(plain, "http://"+codeHost+"/echo", tokenOnly); a.status != http.StatusOK || !isEcho(a.body) {
			t.Errorf("valid token only, primary down: %v", a)
		}
		time.Sleep(time.Until(expiringAt) + 100*time.Millisecond)
		if a := fetch(plain, "http://"+codeHost+"/echo", tokenOnly); !isBadGatewayPage(a) {
			t.Errorf("expired token only, primary down: %v; want the 502 page", a)
		}
		// Nor do JSON clients get anything but a 502.
		req, _ := http.NewRequest(http.MethodGet, sessionApp, nil)
		req.Header = withSession(downSession)
		res, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); res.StatusCode != http.StatusBadGateway || isEcho(body) {
			t.Errorf("API client, primary down: %d %s", res.StatusCode, body)
		}
	})

	t.Run("primary returns", func(t *testing.T) {
		f.primaryLn.Up(t)
		took := waitFor(t, 20*time.Second, "a new session works again", func() (bool, string) {
			a := fetch(plain, sessionApp, withSession(downSession))
			return a.status == http.StatusOK && isEcho(a.body), a.String()
		})
		t.Logf("new sessions work %v after the primary returned", took.Round(time.Millisecond))
		// The token-only user is sent to log in again (the primary's
		// answer relayed), and the warm browser is still fine.
		if a := fetch(plain, "http://"+codeHost+"/echo", tokenOnly); a.status != http.StatusSeeOther || isEcho(a.body) {
			t.Errorf("expired token only, primary back: %v; want the 303 to log in", a)
		}
		if a := fetch(fp.browser, "http://"+codeHost+"/echo", nil); a.status != http.StatusOK {
			t.Errorf("warm browser, primary back: %v", a)
		}
		took = waitFor(t, 20*time.Second, "the dialer is back on the coordinator", func() (bool, string) {
			errs, warns := fp.dialerReport(t)
			return len(errs) == 0 && len(warns) == 0, strings.Join(append(errs, warns...), "; ")
		})
		t.Logf("dialer report clean %v after the primary returned", took.Round(time.Millisecond))
	})

	t.Run("coordination stream cut", func(t *testing.T) {
		sessions := fp.metric(t, "wsedge_coordinate_sessions_total")
		if sessions < 1 {
			t.Fatalf("wsedge_coordinate_sessions_total = %v before the cut", sessions)
		}
		// The coordinator refuses for 3.5 s: the dialer retries with
		// backoff (1 s doubling, ±20 %: attempts near 1 s and 3 s), not
		// in a loop.
		f.slow.refuseCoordination.Store(true)
		f.primaryLn.Cut()
		time.Sleep(3500 * time.Millisecond)
		f.slow.refuseCoordination.Store(false)
		if n := f.slow.refused.Load(); n < 1 || n > 4 {
			t.Errorf("coordination attempts refused in 3.5 s: %d; want 1–4 (retries with backoff)", n)
		} else {
			t.Logf("coordination attempts refused in 3.5 s: %d", n)
		}
		// The dialer opens a new coordination stream and its report is
		// clean again ...
		took := waitFor(t, 30*time.Second, "the dialer reconnects to the coordinator", func() (bool, string) {
			now := fp.metric(t, "wsedge_coordinate_sessions_total")
			errs, warns := fp.dialerReport(t)
			return now > sessions && fp.metric(t, "wsedge_coordinate_connected") == 1 && len(errs)+len(warns) == 0,
				fmt.Sprintf("sessions %v → %v; %s", sessions, now, strings.Join(append(errs, warns...), "; "))
		})
		t.Logf("coordination back %v after the coordinator accepted again", took.Round(time.Millisecond))
		// ... existing app connections never noticed ...
		if err := ws.echo(ctx, "after the cut"); err != nil {
			t.Errorf("open app websocket after the coordination cut: %v", err)
		}
		// ... and new dials (a new websocket, new requests) work.
		ws2 := fp.openEchoSocket(ctx, t, fp.browser)
		if err := ws2.echo(ctx, "new after the cut"); err != nil {
			t.Errorf("new app websocket after the coordination cut: %v", err)
		}
		if a := fetch(plain, sessionApp, withSession(fp.newSession(t))); a.status != http.StatusOK || !isEcho(a.body) {
			t.Errorf("new session after the coordination cut: %v", a)
		}
	})
}
