package devprimary_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	devprimary "github.com/wsedge/wsedge/dev/primary"
)

// Example starts the dev primary with the demo catalog on loopback, as
// `wsedge dev` does, and asks for crypto keys as a proxy would.
func Example() {
	ts := httptest.NewUnstartedServer(nil)
	access, _ := url.Parse("http://" + ts.Listener.Addr().String())
	srv, err := devprimary.New(devprimary.Options{AccessURL: access})
	if err != nil {
		panic(err)
	}
	defer func() { _ = srv.Close() }()
	ts.Config.Handler = srv.Handler()
	ts.Start()
	defer ts.Close()

	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v2/workspaceproxies/me/crypto-keys?feature=workspace_apps_token", nil)
	req.Header.Set("Coder-External-Proxy-Token", srv.ProxyToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer func() { _ = resp.Body.Close() }()
	fmt.Println(resp.StatusCode, strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json"))
	// Output: 200 true
}
