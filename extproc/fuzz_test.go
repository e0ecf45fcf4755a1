package extproc

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// FuzzResponsePolicy feeds arbitrary app headers and request facts to the
// response policy and checks what a browser would get: never a Coder
// cookie, never the app's CORS values unless passthru, and CORS allowed
// only for the owner's own origin.
func FuzzResponsePolicy(f *testing.F) {
	f.Add("coder_session_token=x; Path=/", "Origin, Accept-Encoding", "*", aliceOrigin, "GET", "simple", "subdomain")
	f.Add(" __Host-coder_signed_app_token = y", "origin,,ACCESS-CONTROL-REQUEST-HEADERS", "x", bobOrigin, "POST", "passthru", "subdomain")
	f.Add("a=1", "Accept", "", "null", "PROPFIND", "", "path")
	f.Add("=novalue", ",", "", "", "", "simple", "")
	f.Add("=coder_signed_app_token=x; Domain=apps.example.com; Path=/", "", "", "", "GET", "simple", "subdomain")
	f.Add("coder_session_token; Path=/=", "", "", "", "GET", "passthru", "subdomain")
	f.Fuzz(func(t *testing.T, cookie, vary, acao, origin, method, cors, access string) {
		p, _ := testPolicy(t)
		app := AppInfo{Known: access != "", AccessMethod: appurl.AccessMethod(access), CORSBehavior: cors, Owner: alice}
		in := http.Header{"Set-Cookie": {cookie, "keep=1"}, "Vary": {vary}, "Access-Control-Allow-Origin": {acao}}
		d := p.response(context.Background(), &Exchange{Method: method, Host: targetHost, Origin: origin, App: app}, in)
		out := apply(in, d.Mutation)
		for _, l := range out.Values("Set-Cookie") {
			if name, ok := setCookieName(l); !ok || tokens.IsCoderCookie(name) {
				t.Fatalf("Coder or nameless cookie %q reached the browser", l)
			}
			// Whatever the browser stores must not come back as a Coder
			// cookie in the Cookie header: a nameless cookie is sent as
			// its value alone.
			pair, _, _ := strings.Cut(l, ";")
			for _, c := range (&http.Request{Header: http.Header{"Cookie": {strings.TrimSpace(pair)}}}).Cookies() {
				if tokens.IsCoderCookie(c.Name) {
					t.Fatalf("%q comes back to the proxy as Coder cookie %s", l, c.Name)
				}
			}
		}
		if !slices.Contains(out.Values("Set-Cookie"), "keep=1") {
			t.Fatalf("the app's own cookie was dropped: %q", out.Values("Set-Cookie"))
		}
		if app.passthru() {
			if out.Get("Vary") != vary || out.Get(hdrACAO) != acao {
				t.Fatalf("passthru response changed: %v", out)
			}
			return
		}
		varies := out.Values("Vary")
		if len(varies) == 0 || varies[0] != hdrOrigin {
			t.Fatalf("no Vary: Origin of the proxy's own first: %q", varies)
		}
		varies = varies[1:]
		for _, line := range varies {
			for v := range strings.SplitSeq(line, ",") {
				if isCORSVary(strings.TrimSpace(v)) {
					t.Fatalf("CORS Vary value left: %q", varies)
				}
			}
		}
		got := out.Get(hdrACAO)
		allowed := app.simpleSubdomain() && origin != "" && methodAllowed(method) && strings.Contains(origin, "--alice.apps.example.com")
		if got != "" && (!allowed || got != origin) {
			t.Fatalf("ACAO %q for origin %q method %q app %+v", got, origin, method, app)
		}
	})
}
