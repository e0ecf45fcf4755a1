package dialer

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
)

// rawRequest sends target as the request target of a hand-written
// HTTP/1.1 request (Go's client would re-encode it) and returns the
// response status.
func (e *testEnv) rawRequest(t *testing.T, host, target, token string) int {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n" + edgewire.AppTokenHeader + ": " + token + "\r\nConnection: close\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestAppGetsTheRawPathAuthzDecidedOn: the dialer routes on, and forwards,
// the request path exactly as Envoy sent it — the string authz parsed. A
// path with bytes Go would escape (", {, |, ^, `) used to be re-encoded
// from Go's decoded path, %2F turning into '/': the dialer then parsed
// another app than authz had approved (and refused it), and apps saw other
// bytes than the client sent.
func TestAppGetsTheRawPathAuthzDecidedOn(t *testing.T) {
	e := newEnv(t, nil).start()
	addr, heads := rawApp(t)
	e.agents.set(8080, addr)
	const sub = "code--main--dev--alice.apps.example.com"
	for _, tt := range []struct {
		name, host, target, appURL, want string
	}{
		{"path app", testAccessHost, "/@alice/dev.main/apps/code/a%2Fb\"{|^`c/%2F?q=%22{", "http://127.0.0.1:8080", "/a%2Fb\"{|^`c/%2F?q=%22{"},
		// Decoded, this is app "secure" of workspace dev.main; raw (as
		// authz reads it) it is app "code" of workspace "dev.main/apps/secure".
		{"%2F between the segments", testAccessHost, "/@alice/dev.main%2Fapps%2Fsecure/apps/code/\"x", "http://127.0.0.1:8080", "/\"x"},
		{"subdomain app", sub, "/x%2Fy\"{|^`/z", "http://127.0.0.1:8080", "/x%2Fy\"{|^`/z"},
		{"app URL with a base path", sub, "/x%2Fy|", "http://127.0.0.1:8080/base/", "/base/x%2Fy|"},
		// A target starting with "//" cannot go out verbatim (Go would
		// write it as an absolute URL): only the bytes Go refuses are
		// escaped, %2F stays.
		{"leading //", sub, "//x%2Fy\"", "http://127.0.0.1:8080", "//x%2Fy%22"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rawPathOnly, _, _ := strings.Cut(tt.target, "?")
			rt, err := e.options.Router.Route(tt.host, rawPathOnly)
			if err != nil || rt.Kind == appurl.KindNone {
				t.Fatalf("route %q: %+v %v", tt.target, rt, err)
			}
			tok := e.token(rt.Request, tt.appURL)
			if status := e.rawRequest(t, tt.host, tt.target, tok); status != http.StatusOK {
				t.Fatalf("status %d, want the app (token for %+v)", status, rt.Request)
			}
			head := <-heads
			line, _, _ := strings.Cut(head, "\r\n")
			if want := "GET " + tt.want + " HTTP/1.1"; line != want {
				t.Errorf("app got request line %q, want %q", line, want)
			}
		})
	}
}

func TestJoinRawPath(t *testing.T) {
	for _, tt := range [][3]string{
		{"", "/a", "/a"}, {"/", "/a", "/a"}, {"/base", "/a", "/base/a"}, {"/base/", "/a%2F", "/base/a%2F"}, {"/base", "a", "/base/a"},
	} {
		if got := joinRawPath(tt[0], tt[1]); got != tt[2] {
			t.Errorf("joinRawPath(%q, %q) = %q, want %q", tt[0], tt[1], got, tt[2])
		}
	}
}

// TestFixedRoutesMatchTheRawPath: /healthz, /api/v2/buildinfo and the
// others are matched on the raw path, as Envoy matches its exact routes
// (and as Coder's router does): an escaped spelling is not them.
func TestFixedRoutesMatchTheRawPath(t *testing.T) {
	e := newEnv(t, nil).start()
	for _, target := range []string{"/health%7A", "/api/v2/build%69nfo", "/%68ealthz-report", "/latency%2Dcheck"} {
		if status := e.rawRequest(t, testAccessHost, target, ""); status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want the 400 \"Head to the Dashboard\" page", target, status)
		}
	}
	if status := e.rawRequest(t, testAccessHost, "/healthz", ""); status != http.StatusOK {
		t.Errorf("/healthz: status %d", status)
	}
}
