package authz

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsedge/wsedge/internal/testutil"
)

// primaryDownDetail is what a user is told when the primary cannot be
// reached to issue a token; the README quotes it.
const primaryDownDetail = "The proxy could not reach the Coder primary to authorize this request. Try again shortly."

// TestPrimaryUnreachableAnswer pins what a request that needs the primary
// gets while the primary does not answer, for browsers and API clients,
// and that the README describes exactly that (status, page or JSON, text).
func TestPrimaryUnreachableAnswer(t *testing.T) {
	f := newFixture(t, nil)
	f.issuer.err = errors.New("primary: POST /api/v2/workspaceproxies/me/issue-signed-app-token: primary unavailable: dial tcp: connection refused")
	for _, tt := range []struct {
		accept string
		html   bool
	}{
		{"", true},
		{"text/html,application/xhtml+xml", true},
		{"*/*", true},
		{"application/json", false},
	} {
		t.Run("Accept "+tt.accept, func(t *testing.T) {
			in := request("code--main--dev--alice.apps.example.com", "/")
			if tt.accept != "" {
				in.Header.Set("Accept", tt.accept)
			}
			d := f.svc.Check(context.Background(), in)
			if d.Allow || d.Status != http.StatusBadGateway {
				t.Fatalf("allow=%v status=%d, want a 502 deny", d.Allow, d.Status)
			}
			body := string(d.Body)
			if tt.html {
				if d.Header.Get("Content-Type") != "text/html; charset=utf-8" || d.Header.Get("Cache-Control") != "no-store" ||
					!strings.Contains(body, "<title>502 - Bad Gateway</title>") || !strings.Contains(body, "<h1>Bad Gateway</h1>") || !strings.Contains(body, primaryDownDetail) ||
					!strings.Contains(body, ">Retry</a>") || !strings.Contains(body, ">Back to site</a>") {
					t.Errorf("page: %v\n%s", d.Header, body)
				}
				return
			}
			want := `{"message":"Bad Gateway","detail":"` + primaryDownDetail + `"}` + "\n"
			if d.Header.Get("Content-Type") != "application/json; charset=utf-8" || body != want {
				t.Errorf("JSON answer %v %q, want %q", d.Header, body, want)
			}
		})
	}

	readme, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ") // unwrap lines
	for _, want := range []string{
		"authz answers **502** with wsedge's own error page",
		`titled "502 - Bad Gateway", headed "Bad Gateway", that says "` + primaryDownDetail + `"`,
		"`{\"message\":\"Bad Gateway\",\"detail\":\"" + primaryDownDetail + "\"}`",
		"Coder's own proxy answers the same situation with **500** and JSON `{\"message\":\"Internal server error\",\"detail\":\"…\"}`",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("README.md does not say %s", want)
		}
	}
}
