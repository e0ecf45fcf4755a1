package devprimary

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzIssue posts arbitrary bodies to issue-signed-app-token and
// resolve-app-owner: every answer is one of coderd's outcomes, never a
// panic or a 5xx other than the internal-error page.
func FuzzIssue(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"app_request":{"access_method":"subdomain","base_path":"/","username_or_id":"alice","workspace_name_or_id":"dev","agent_name_or_id":"main","app_slug_or_port":"owner-app"},"path_app_base_url":"https://proxy.test","app_hostname":"*.apps.proxy.test","session_token":"alice00001-alicesecret00000000000"}`,
		`{"app_request":{"access_method":"path","base_path":"/@alice/dev/apps/8080/","username_or_id":"alice","workspace_name_or_id":"dev","app_slug_or_port":"8080"},"path_app_base_url":"::"}`,
		`{"app_request":{"access_method":"terminal","base_path":"/api/v2/workspaceagents/x/pty","agent_name_or_id":"x"}}`,
		`{"app_request":{"access_method":"subdomain","base_path":"/","username_or_id":"alice","workspace_name_or_id":"dev","app_slug_or_port":"65535s"},"app_hostname":"*"}`,
		`[`,
	} {
		f.Add(seed)
	}
	cat, err := ParseCatalog([]byte(testCatalogYAML))
	if err != nil {
		f.Fatal(err)
	}
	access, _ := url.Parse("http://127.0.0.1:1")
	s, err := New(Options{
		Catalog:        cat,
		AccessURL:      access,
		Proxies:        []ProxySpec{{ID: proxyID, Secret: proxySecret}},
		HealthInterval: 1 << 62,
		HTTPClient:     loopbackOnly,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	h := s.Handler()
	allowed := map[int]bool{200: true, 201: true, 303: true, 400: true, 404: true, 500: true, 502: true}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{issuePath, "/api/v2/workspaceproxies/me/resolve-app-owner"} {
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			req.Header.Set(proxyTokenHeader, proxyID.String()+":"+proxySecret)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if !allowed[rec.Code] {
				t.Fatalf("%s: status %d for %q", path, rec.Code, body)
			}
			if rec.Code == 500 && !strings.Contains(rec.Body.String(), "Internal Server Error") && !strings.Contains(rec.Body.String(), "An internal server error occurred.") {
				t.Fatalf("%s: 500 without coderd's page: %s", path, rec.Body)
			}
		}
	})
}

func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t, nil)
	body := `{"stats":"` + strings.Repeat("x", maxBody) + `"}`
	wantJSONError(t, h.proxy(http.MethodPost, "/api/v2/workspaceproxies/me/app-stats", body), http.StatusBadRequest,
		"Request body must be valid JSON.", "http: request body too large")
}
