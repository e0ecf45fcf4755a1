package dialer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tokens"
)

// TestForwardSyncAnswersAsReverseProxy: for every way an app may answer
// a warm GET or HEAD (and for the request headers a proxy must not pass
// on), the dialer answers through forwardSync exactly as through the
// httputil.ReverseProxy the other requests take — status line, headers,
// body, trailers, informational answers, a cut body, an app that
// switches protocols unasked or answers garbage — and the app sees the
// same request.
func TestForwardSyncAnswersAsReverseProxy(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(forwardCaseApp))
	defer app.Close()
	port := appPort(t, app)
	const base = "/@alice/dev.main/apps/code"

	// forwardSync's and the ReverseProxy's (proxyOnly) dialers, each
	// with a token of its own key.
	var addrs, cookies [2]string
	for i, proxyOnly := range []bool{false, true} {
		e := newEnv(t, nil)
		e.srv.proxyOnly = proxyOnly
		e.start()
		e.agents.set(port, app.Listener.Addr().String())
		addrs[i] = e.addr
		cookies[i] = tokens.SignedAppTokenCookie + "=" + e.token(pathAppRequest("code"), "http://127.0.0.1:"+itoa(port))
	}
	cases := []struct{ name, method, path, extra string }{
		{"small", "GET", "/small", ""},
		{"large", "GET", "/large", ""},
		{"head", "HEAD", "/small", ""},
		{"head of a stream", "HEAD", "/stream", ""},
		{"stream", "GET", "/stream", ""},
		{"event stream", "GET", "/events", ""},
		// (An empty stream is not compared: whether ReverseProxy's
		// header flush comes before the handler's end, which makes it
		// chunked, is a race.)
		{"trailers", "GET", "/trailers", ""},
		{"early hints", "GET", "/hints", ""},
		{"no content", "GET", "/no-content", ""},
		{"not modified", "GET", "/not-modified", ""},
		{"hop-by-hop answer", "GET", "/hop", ""},
		{"cut", "GET", "/cut", ""},
		{"switch unasked", "GET", "/switch", ""},
		{"switch without upgrade", "GET", "/switch-bare", ""},
		{"switch to a bad name", "GET", "/switch-bad", ""},
		{"garbage", "GET", "/garbage", ""},
		{"request headers", "GET", "/echo?a=1;b=2&c=%zz", "Te: trailers, deflate\r\nConnection: X-Drop, keep-alive\r\nX-Drop: 1\r\nKeep-Alive: 300\r\nProxy-Authorization: secret\r\nX-Keep: 2\r\n"},
		{"no user agent", "GET", "/echo", ""},
		{"user agent", "GET", "/echo", "User-Agent: test/1\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := func(i int) string {
				return tc.method + " " + base + tc.path + " HTTP/1.1\r\nHost: " + testAccessHost + "\r\nCookie: " + cookies[i] + "\r\n" + tc.extra + "\r\n"
			}
			got, want := forwardExchange(t, addrs[0], tc.method, raw(0)), forwardExchange(t, addrs[1], tc.method, raw(1))
			if got != want {
				t.Errorf("forwardSync answered\n%.3000s\nReverseProxy answered\n%.3000s", got, want)
			}
			if !strings.HasPrefix(want, "HTTP/1.1 ") && tc.name != "cut" { // a cut answer is never sent
				t.Errorf("no answer: %q", want)
			}
		})
	}
}

// forwardCaseApp answers as forwardCases' apps do, by path.
func forwardCaseApp(w http.ResponseWriter, r *http.Request) {
	flush := func() { _ = http.NewResponseController(w).Flush() }
	raw := func(s string) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		_, _ = io.WriteString(c, s)
		_ = c.Close()
	}
	switch r.URL.Path {
	case "/small":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello")
	case "/large":
		_, _ = io.WriteString(w, strings.Repeat("0123456789", 4000))
	case "/stream":
		w.Header().Set("Content-Type", "text/plain")
		for i := range 3 {
			_, _ = fmt.Fprintf(w, "part %d\n", i)
			flush()
			time.Sleep(20 * time.Millisecond)
		}
	case "/events":
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Content-Length", "24")
		_, _ = io.WriteString(w, "data: 1\n\n")
		flush()
		time.Sleep(20 * time.Millisecond)
		_, _ = io.WriteString(w, "data: 2\n\n123456")
	case "/trailers":
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	case "/hints":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		_, _ = io.WriteString(w, "final")
	case "/no-content":
		w.WriteHeader(http.StatusNoContent)
	case "/not-modified":
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	case "/hop":
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("X-Public", "2")
		_, _ = io.WriteString(w, "hop")
	case "/cut":
		raw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
	case "/switch":
		raw("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
	case "/switch-bad":
		raw("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: b\xffd\r\n\r\n")
	case "/switch-bare":
		raw("HTTP/1.1 101 Switching Protocols\r\n\r\n")
	case "/garbage":
		raw("this is not HTTP\r\n\r\n")
	case "/echo":
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range r.Header {
				if !yield(k) {
					return
				}
			}
		})
		_, _ = fmt.Fprintf(w, "%s %s\n", r.Method, r.URL.RequestURI())
		for _, k := range keys {
			if k == "Traceparent" {
				continue // one per request
			}
			_, _ = fmt.Fprintf(w, "%s: %q\n", k, r.Header[k])
		}
	}
}

// forwardExchange sends raw (a request of method) to addr and returns
// the bytes of the answers that came back, up to the end of the final
// one's body (or of the connection), with the values that differ per
// request masked.
func forwardExchange(t *testing.T, addr, method, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &got))
	for {
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			break
		}
		_, _ = io.Copy(io.Discard, res.Body)
		if res.StatusCode >= http.StatusOK {
			break
		}
	}
	return forwardMask.ReplaceAllString(got.String(), "$1: (masked)\r")
}

var forwardMask = regexp.MustCompile(`(?m)^(Date|X-Coder-Request-Id|Traceparent): [^\r\n]*\r`)
