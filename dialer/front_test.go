package dialer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// frontServer runs h behind a front on loopback, as Serve does: the
// front answers what it takes, srv the connections it hands over.
type frontServer struct {
	addr string
	fr   *front
	srv  *http.Server
}

func startFront(t testing.TB, h http.Handler, mutate func(*http.Server)) *frontServer {
	t.Helper()
	ln, srv := newTestServer(t, h)
	srv.IdleTimeout = 5 * time.Minute
	if mutate != nil {
		mutate(srv)
	}
	fr := newFront(ln, srv, context.Background())
	done := make(chan error, 1)
	go func() { done <- fr.serve() }()
	go func() { _ = srv.Serve(fr.handoff) }()
	t.Cleanup(func() {
		_ = srv.Close()
		fr.close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("front serve: %v", err)
		}
	})
	return &frontServer{addr: ln.Addr().String(), fr: fr, srv: srv}
}

// startPlain runs h on net/http's own server, the behaviour the front
// must keep.
func startPlain(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, srv := newTestServer(t, h)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// newTestServer is a loopback listener and a server of h configured as
// Serve configures the dialer's (HTTP/1.1 and h2c), logging nowhere.
func newTestServer(t testing.TB, h http.Handler) (net.Listener, *http.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return ln, &http.Server{Handler: h, Protocols: &protocols, ReadHeaderTimeout: 30 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
}

// rawAnswer is an answer as the client saw it on the wire.
type rawAnswer struct {
	status  string
	header  http.Header
	body    string
	trailer http.Header
	// cut: the connection ended before the body did.
	cut bool
	// open: the connection answered a second request after this one.
	open bool
	// byFront: the front, not net/http, wrote the answer.
	byFront bool
}

// exchange sends raw on a new connection to addr, reads the answer
// (method tells how: HEAD has no body), then sends a GET and reports
// whether it is answered.
func exchange(t *testing.T, addr, raw, method string) rawAnswer {
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
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: reading the answer: %v", raw, err)
	}
	body, err := io.ReadAll(res.Body)
	// A body that ends with the connection may end in a reset: only a
	// framed one can be cut.
	framed := res.ContentLength >= 0 || len(res.TransferEncoding) > 0
	a := rawAnswer{status: res.Status, header: res.Header, body: string(body), trailer: res.Trailer, cut: err != nil && framed}
	a.byFront = res.Header.Get("X-By") == "front"
	res.Header.Del("X-By")
	if d := res.Header.Get("Date"); d != "" {
		if _, err := http.ParseTime(d); err != nil {
			t.Errorf("%q: Date %q: %v", raw, d, err)
		}
		res.Header.Set("Date", "(a date)")
	}
	if res.Close || a.cut {
		return a
	}
	if _, err := io.WriteString(c, "GET /again HTTP/1.1\r\nHost: example\r\n\r\n"); err != nil {
		return a
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet}); err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		a.open = true
	}
	return a
}

// echoBody answers with the request's body.
func echoBody(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	_, _ = w.Write(b)
}

// hugeBody is more than the front (and net/http) reads of a body a
// handler left.
var hugeBody = strings.Repeat("b", discardBodyBytes+1000)

// chunked frames s as 4 KiB chunks.
func chunked(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		n := min(len(s), 4096)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
		s = s[n:]
	}
	return b.String()
}

// tagFront marks answers the front writes (X-By: front) before h runs.
func tagFront(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*frontWriter); ok {
			w.Header().Set("X-By", "front")
		}
		h.ServeHTTP(w, r)
	})
}

// TestFrontAnswersAsNetHTTP: for every way a handler may answer, the
// front's answer reads exactly as net/http's own server's (status,
// header, body, trailers, whether the connection stays open), and the
// requests it does not take reach net/http with their bytes intact.
func TestFrontAnswersAsNetHTTP(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 400) // 6,400 bytes
	html := "<!DOCTYPE html><html><body>hi</body></html>"
	cases := []struct {
		name    string
		handler http.HandlerFunc
		req     string
		method  string
		front   bool // the front answers it itself
	}{
		{name: "content length set", handler: setThenWrite("hello", "Content-Length", "5", "Content-Type", "text/plain"), front: true},
		{name: "small body gets a length", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello there")
		}, front: true},
		{name: "large body is chunked", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, big)
		}, front: true},
		{name: "large first write sniffed", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, html+big)
		}, front: true},
		{name: "buffer filled then more", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, html+strings.Repeat(" ", 1000))
			_, _ = io.WriteString(w, big)
		}, front: true},
		{name: "flushed is chunked", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "one ")
			_ = http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, "two")
		}, front: true},
		{name: "flush before any write", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			_ = http.NewResponseController(w).Flush()
		}, front: true},
		{name: "sniffed html", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, html)
		}, front: true},
		{name: "encoded is not sniffed", handler: setThenWrite(html, "Content-Encoding", "identity"), front: true},
		{name: "nil content type is not sniffed", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			_, _ = io.WriteString(w, html)
		}, front: true},
		{name: "empty handler", handler: func(w http.ResponseWriter, r *http.Request) {}, front: true},
		{name: "head with a body written", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, html)
		}, req: "HEAD / HTTP/1.1\r\nHost: example\r\n\r\n", method: http.MethodHead, front: true},
		{name: "head with a length", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1234")
		}, req: "HEAD / HTTP/1.1\r\nHost: example\r\n\r\n", method: http.MethodHead, front: true},
		{name: "no content", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "abc"); !errors.Is(err, http.ErrBodyNotAllowed) {
				panic(fmt.Sprintf("write after 204: %v", err))
			}
		}, front: true},
		{name: "not modified", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "3")
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		}, front: true},
		{name: "trailers", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum, x-other")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
			w.Header().Set("X-Other", "7")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		}, front: true},
		{name: "early hints", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("X-Final", "yes")
			_, _ = io.WriteString(w, "done")
		}, front: true},
		{name: "short of its length", handler: setThenWrite("short", "Content-Length", "10"), front: true},
		{name: "beyond its length", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			_, _ = io.WriteString(w, "abc")
			if _, err := io.WriteString(w, "def"); !errors.Is(err, http.ErrContentLength) {
				panic(fmt.Sprintf("write beyond the length: %v", err))
			}
		}, front: true},
		{name: "header changed after WriteHeader", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Before", "1")
			w.WriteHeader(http.StatusTeapot)
			w.Header().Set("X-After", "1")
			_, _ = io.WriteString(w, "tea")
		}, front: true},
		{name: "client asks to close", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "bye")
		}, req: "GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n", front: true},
		{name: "handler closes", handler: setThenWrite("bye", "Connection", "close"), front: true},
		{name: "identity transfer", handler: setThenWrite("raw", "Transfer-Encoding", "identity"), front: true},
		{name: "length and chunked", handler: setThenWrite("abc", "Transfer-Encoding", "chunked", "Content-Length", "3"), front: true},
		{name: "bad length", handler: setThenWrite("abc", "Content-Length", "-3"), front: true},
		{name: "newline in a value", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Odd", "a\r\nX-Injected: 1")
		}, front: true},
		{name: "date of its own", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", "Tue, 01 Dec 2026 00:00:00 GMT")
		}, front: true},
		{name: "status without text", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(599)
		}, front: true},
		{name: "what the handler sees", handler: func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("X-Host", r.Host)
			h.Set("X-URI", r.RequestURI)
			h.Set("X-Path", r.URL.Path)
			h.Set("X-Query", r.URL.RawQuery)
			h.Set("X-Has-Host-Header", strconv.FormatBool(r.Header.Get("Host") != ""))
			h.Set("X-Cookie", r.Header.Get("Cookie"))
			h.Set("X-Close", strconv.FormatBool(r.Close))
			h.Set("X-Proto", r.Proto)
			h.Set("X-Remote", strconv.FormatBool(r.RemoteAddr != ""))
			h.Set("X-Length", strconv.FormatInt(r.ContentLength, 10))
			_, srvOK := r.Context().Value(http.ServerContextKey).(*http.Server)
			_, addrOK := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
			h.Set("X-Context", strconv.FormatBool(srvOK && addrOK))
		}, req: "GET /a/b%2Fc?x=1&y=%41 HTTP/1.1\r\nHost: app.example:8080\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n", front: true},
		// Bodies: read, left, closed, too large to read after the
		// handler.
		{name: "post with a body", handler: echoBody, req: "POST / HTTP/1.1\r\nHost: example\r\nContent-Length: 4\r\n\r\nbody", front: true},
		{name: "get with a chunked body", handler: echoBody,
			req: "GET / HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", front: true},
		{name: "chunked body with trailers", handler: func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s %q", b, r.Trailer)
		}, req: "PUT / HTTP/1.1\r\nHost: example\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 6\r\n\r\n", front: true},
		{name: "chunked body with a trailer it did not announce", handler: func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s %q", b, r.Trailer)
		}, req: "PUT / HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 6\r\n\r\n", front: true},
		{name: "body left unread", handler: setThenWrite("ignored"),
			req: "POST / HTTP/1.1\r\nHost: example\r\nContent-Length: 10\r\n\r\n0123456789", front: true},
		{name: "chunked body left unread", handler: setThenWrite("ignored"),
			req: "POST / HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", front: true},
		{name: "body closed unread", handler: func(w http.ResponseWriter, r *http.Request) {
			_ = r.Body.Close()
			if _, err := r.Body.Read(make([]byte, 1)); !errors.Is(err, http.ErrBodyReadAfterClose) {
				panic(fmt.Sprintf("read after close: %v", err))
			}
			_, _ = io.WriteString(w, "closed")
		}, req: "POST / HTTP/1.1\r\nHost: example\r\nContent-Length: 10\r\n\r\n0123456789", front: true},
		{name: "body half read, answer streamed", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadFull(r.Body, make([]byte, 3))
			_, _ = io.WriteString(w, big)
		}, req: "POST / HTTP/1.1\r\nHost: example\r\nContent-Length: 10\r\n\r\n0123456789", front: true},
		{name: "body too large to leave", handler: setThenWrite("ignored"),
			req: "POST / HTTP/1.1\r\nHost: example\r\nContent-Length: " + strconv.Itoa(len(hugeBody)) + "\r\n\r\n" + hugeBody, front: true},
		{name: "chunked body too large to leave", handler: setThenWrite("ignored"),
			req: "POST / HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(hugeBody) + "0\r\n\r\n", front: true},
		{name: "large body closed unread", handler: func(w http.ResponseWriter, r *http.Request) {
			_ = r.Body.Close()
		}, req: "POST / HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(hugeBody) + "0\r\n\r\n", front: true},
		{name: "body left by a client that closes", handler: setThenWrite("ignored"),
			req: "POST / HTTP/1.1\r\nHost: example\r\nConnection: close\r\nContent-Length: 10\r\n\r\n0123456789", front: true},
		{name: "malformed chunked body", handler: echoBody,
			req: "POST / HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", front: true},
		// What the front leaves to net/http.
		{name: "upgrade with a body", handler: echoBody,
			req: "POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi"},
		{name: "expect continue with a body", handler: echoBody,
			req: "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"},
		{name: "connect", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Method)
		}, req: "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "http/1.0", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Proto)
		}, req: "GET / HTTP/1.0\r\nHost: example\r\n\r\n"},
		{name: "expect continue", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "go on")
		}, req: "GET / HTTP/1.1\r\nHost: example\r\nExpect: 100-continue\r\n\r\n"},
		{name: "no host", handler: func(w http.ResponseWriter, r *http.Request) {}, req: "GET / HTTP/1.1\r\n\r\n"},
		{name: "two hosts", handler: func(w http.ResponseWriter, r *http.Request) {}, req: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{name: "bad host", handler: func(w http.ResponseWriter, r *http.Request) {}, req: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"},
		{name: "bad header name", handler: func(w http.ResponseWriter, r *http.Request) {}, req: "GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n"},
		{name: "bad request line", handler: func(w http.ResponseWriter, r *http.Request) {}, req: "GET /\r\nHost: a\r\n\r\n"},
		{name: "bad method", handler: func(w http.ResponseWriter, r *http.Request) {}, req: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "options", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Method)
		}, req: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "large header block", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, strconv.Itoa(len(r.Header.Get("Cookie"))))
		}, req: "GET / HTTP/1.1\r\nHost: a\r\nCookie: " + strings.Repeat("c", 3*frontBufferSize) + "\r\n\r\n"},
		{name: "upgrade refused", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, r.Header.Get("Upgrade"))
		}, req: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", front: true},
		{name: "h2c upgrade", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Header.Get("Upgrade"))
		}, req: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, method := tc.req, tc.method
			if req == "" {
				req = "GET / HTTP/1.1\r\nHost: example\r\n\r\n"
			}
			if method == "" {
				method = strings.Fields(req)[0]
			}
			fs := startFront(t, tagFront(tc.handler), nil)
			plain := startPlain(t, tc.handler)
			got, want := exchange(t, fs.addr, req, method), exchange(t, plain, req, method)
			if got.byFront != tc.front {
				t.Errorf("answered by the front: %v, want %v", got.byFront, tc.front)
			}
			got.byFront = false
			if got.status != want.status || got.body != want.body || got.open != want.open || got.cut != want.cut ||
				!maps.EqualFunc(got.header, want.header, slices.Equal) || !maps.EqualFunc(got.trailer, want.trailer, slices.Equal) {
				t.Errorf("front answered\n%+v\nnet/http answered\n%+v", got, want)
			}
		})
	}
}

// TestFrontKeepsConnections: a kept-alive connection's GETs are all
// the front's, pipelined ones answered in order; once a request the
// front does not take arrives, net/http serves the connection from then
// on, the request's bytes and those after it intact.
func TestFrontKeepsConnections(t *testing.T) {
	fs := startFront(t, tagFront(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	})), nil)
	c, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	read := func(method, want string, byFront bool) {
		t.Helper()
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if string(b) != want || (res.Header.Get("X-By") == "front") != byFront {
			t.Fatalf("answer %q (by the front: %v), want %q (%v)", b, res.Header.Get("X-By") == "front", want, byFront)
		}
	}
	for i := range 3 {
		_, _ = fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
		read(http.MethodGet, fmt.Sprintf("GET /%d ", i), true)
	}
	// Pipelined, in one write.
	_, _ = io.WriteString(c, "GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /p2 HTTP/1.1\r\nHost: a\r\n\r\nGET /p3 HTTP/1.1\r\nHost: a\r\n\r\n")
	read(http.MethodGet, "GET /p1 ", true)
	read(http.MethodHead, "", true)
	read(http.MethodGet, "GET /p3 ", true)
	// A POST, a GET right behind it after the stray line end some
	// clients send after a body, a chunked PUT.
	_, _ = io.WriteString(c, "POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
	read(http.MethodPost, "POST /form abc", true)
	read(http.MethodGet, "GET /after ", true)
	_, _ = io.WriteString(c, "PUT /doc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n")
	read(http.MethodPut, "PUT /doc def", true)
	// One the front does not take: net/http's from then on.
	_, _ = io.WriteString(c, "GET /old HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /last HTTP/1.1\r\nHost: a\r\n\r\n")
	read(http.MethodGet, "GET /old ", false)
	read(http.MethodGet, "GET /last ", false)
}

// TestFrontCancelsWhenClientGoes: a request still running when its
// client goes away ends its context, as under net/http.
func TestFrontCancelsWhenClientGoes(t *testing.T) {
	ended := make(chan error, 1)
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ended <- awaitCancel(r)
	}), nil)
	sendAndLeave(t, fs.addr, "GET /long-poll HTTP/1.1\r\nHost: a\r\n\r\n")
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
}

// awaitCancel waits for r's context to end (its client went away) and
// says so if it does not within 10 s.
func awaitCancel(r *http.Request) error {
	select {
	case <-r.Context().Done():
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("the request's context never ended")
	}
}

// sendAndLeave sends raw on a new connection to addr, waits past the
// time the front starts watching a running request, and closes it.
func sendAndLeave(t *testing.T, addr, raw string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, raw)
	time.Sleep(2 * frontWatchAfter)
	_ = c.Close()
}

// TestFrontSweepStopsAndComesBack: the sweep that starts watches runs
// only while some request is armed, and a request armed after it
// stopped is watched all the same.
func TestFrontSweepStopsAndComesBack(t *testing.T) {
	ended := make(chan error, 1)
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/long-poll" {
			return // /quick, and exchange's /again
		}
		ended <- awaitCancel(r)
	}), nil)
	for round := range 2 {
		sendAndLeave(t, fs.addr, "GET /long-poll HTTP/1.1\r\nHost: a\r\n\r\n")
		if err := <-ended; err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// Quick requests arm watches that end before they start.
		for range 3 {
			if got := exchange(t, fs.addr, "GET /quick HTTP/1.1\r\nHost: a\r\n\r\n", http.MethodGet); got.status != "200 OK" {
				t.Fatalf("quick request: %+v", got)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for fs.fr.sweeping.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the sweep still runs with no request armed (%d armed)", round, len(fs.fr.armedWatches()))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestFrontCancelsWhenClientGoesMidBody: a client that goes away while
// its body is read ends the request's context, as under net/http, and
// the read fails.
func TestFrontCancelsWhenClientGoesMidBody(t *testing.T) {
	ended := make(chan error, 1)
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err == nil {
			ended <- errors.New("the body read to its end")
			return
		}
		ended <- awaitCancel(r)
	}), nil)
	sendAndLeave(t, fs.addr, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nten bytes.")
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
}

// TestFrontLongRequestThenPipelined: a request pipelined behind a long
// one (its first byte read by the watch) is answered whole.
func TestFrontLongRequestThenPipelined(t *testing.T) {
	fs := startFront(t, tagFront(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(3 * frontWatchAfter)
		}
		_, _ = io.WriteString(w, r.URL.Path)
	})), nil)
	c, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(2 * frontWatchAfter) // the watch reads now
	_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"/slow", "/next"} {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if string(b) != want || res.Header.Get("X-By") != "front" {
			t.Fatalf("answer %q by %q, want %q by the front", b, res.Header.Get("X-By"), want)
		}
	}
}

// TestFrontTimeouts: a connection that sends half a header, or nothing
// after an answer, is closed after net/http's header and idle timeouts.
func TestFrontTimeouts(t *testing.T) {
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *http.Server) {
		s.ReadHeaderTimeout, s.IdleTimeout = 200*time.Millisecond, 300*time.Millisecond
	})
	closedWithin := func(c net.Conn, br *bufio.Reader, d time.Duration) {
		t.Helper()
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("read a byte, want the connection closed")
		}
		if took := time.Since(start); took > d {
			t.Fatalf("closed after %v, want within %v", took, d)
		}
	}
	half, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	_, _ = io.WriteString(half, "GET / HTTP/1.1\r\nHost: a\r\n")
	closedWithin(half, bufio.NewReader(half), 2*time.Second)

	idle, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_, _ = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(idle)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	closedWithin(idle, br, 2*time.Second)
}

// TestFrontShutdown: shutdown closes idle connections at once, lets a
// request in flight finish (its answer says Connection: close) and
// refuses new connections.
func TestFrontShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}), nil)
	idle, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_, _ = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if res, err := http.ReadResponse(ibr, nil); err != nil {
		t.Fatal(err)
	} else {
		_ = res.Body.Close()
	}
	busy, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, _ = io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- fs.fr.shutdown(context.Background()) }()
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ibr.ReadByte(); err == nil {
		t.Fatal("the idle connection was not closed")
	}
	if c, err := net.DialTimeout("tcp", fs.addr, time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a new connection was served after shutdown began")
		}
		_ = c.Close()
	}
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "done" || !res.Close {
		t.Fatalf("in-flight answer %q, close %v; want done and Connection: close", b, res.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestFrontPanics: a handler's panic closes its connection and the
// front goes on serving; http.ErrAbortHandler (ReverseProxy's way to
// abort an answer) does the same silently.
func TestFrontPanics(t *testing.T) {
	var logged logLines
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "half")
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		case "/panic":
			panic("boom")
		}
		_, _ = io.WriteString(w, "fine")
	}), func(s *http.Server) { s.ErrorLog = log.New(&logged, "", 0) })
	for _, path := range []string{"/abort", "/panic"} {
		c, err := net.Dial("tcp", fs.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
		got, _ := io.ReadAll(c)
		_ = c.Close()
		if path == "/abort" && !bytes.HasSuffix(got, []byte("\r\n\r\nhalf")) {
			t.Errorf("%s: got %q, want the flushed half and a close", path, got)
		}
		if path == "/panic" && len(got) != 0 {
			t.Errorf("%s: got %q, want the connection closed with nothing", path, got)
		}
	}
	logged.mu.Lock()
	text := logged.buf.String()
	logged.mu.Unlock()
	if !strings.Contains(text, "boom") || strings.Count(text, "panic serving") != 1 {
		t.Errorf("log %q: want one panic line, about boom", text)
	}
	res := exchange(t, fs.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", http.MethodGet)
	if res.body != "fine" {
		t.Fatalf("after the panics: %q", res.body)
	}
}

// TestFrontUnderReverseProxy: the dialer's reverse proxy through the
// front streams and ends answers as through net/http, including one it
// aborts mid-body (the upstream closed early), and sends request bodies
// on (read by http.Transport's own goroutine) as through net/http.
func TestFrontUnderReverseProxy(t *testing.T) {
	up := startPlain(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
		case "/slow":
			b, _ := io.ReadAll(r.Body)
			time.Sleep(frontWatchAfter + 100*time.Millisecond) // the front watches meanwhile
			_, _ = w.Write(b)
		case "/early":
			_, _ = io.WriteString(w, "not read")
		case "/cut":
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "partial")
			_ = http.NewResponseController(w).Flush()
			c, _, _ := http.NewResponseController(w).Hijack()
			_ = c.Close()
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				_, _ = fmt.Fprintf(w, "data: %d\n\n", i)
				_ = http.NewResponseController(w).Flush()
				time.Sleep(20 * time.Millisecond) // one event per read
			}
		default:
			_, _ = io.WriteString(w, strings.Repeat("x", 5000))
		}
	}))
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme, pr.Out.URL.Host = "http", up
	}, ErrorLog: log.New(io.Discard, "", 0)}
	fs := startFront(t, tagFront(rp), nil)
	plain := startPlain(t, rp)
	post := func(path, header, body string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: a\r\n" + header + "\r\n" + body
	}
	large := strings.Repeat("0123456789", 30000)
	for name, raw := range map[string]string{
		"big":                   "GET /big HTTP/1.1\r\nHost: a\r\n\r\n",
		"stream":                "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n",
		"cut":                   "GET /cut HTTP/1.1\r\nHost: a\r\n\r\n",
		"post":                  post("/echo", "Content-Length: 5\r\n", "hello"),
		"post chunked":          post("/echo", "Transfer-Encoding: chunked\r\n", chunked("hello")+"0\r\n\r\n"),
		"post large":            post("/echo", "Content-Length: "+strconv.Itoa(len(large))+"\r\n", large),
		"post slow":             post("/slow", "Content-Length: 5\r\n", "hello"),
		"post slow, get behind": post("/slow", "Content-Length: 5\r\n", "hello") + "GET /big HTTP/1.1\r\nHost: a\r\n\r\n",
		"post unread":           post("/early", "Content-Length: 10\r\n", "0123456789") + "GET /big HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		got, want := exchangeLoosely(t, fs.addr, raw), exchangeLoosely(t, plain, raw)
		if got != want {
			t.Errorf("%s: front gave\n%q\nnet/http gave\n%q", name, got, want)
		}
		if name != "cut" && !strings.HasPrefix(want, "HTTP/1.1 200 OK") {
			t.Errorf("%s: net/http gave\n%q", name, want)
		}
	}
}

// exchangeLoosely sends raw on a new connection and returns what came
// back until the connection closed or went quiet, Date blanked.
func exchangeLoosely(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, raw)
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	var out []string
	for _, l := range strings.Split(got.String(), "\r\n") {
		if strings.HasPrefix(l, "Date: ") {
			l = "Date: (a date)"
		}
		if l == "X-By: front" {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\r\n")
}

// TestFrontHijack: a protocol switch takes the connection from the
// front as from net/http: the header written before goes out, bytes the
// client sent behind the request are in the returned reader (also a
// byte the watch of a slow switch read), and the front lets the
// connection be.
func TestFrontHijack(t *testing.T) {
	for _, slow := range []bool{false, true} {
		t.Run(fmt.Sprintf("slow=%v", slow), func(t *testing.T) {
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if slow {
					time.Sleep(3 * frontWatchAfter)
				}
				w.Header().Set("X-Before", "1")
				c, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				defer c.Close()
				if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrHijacked) {
					panic(fmt.Sprintf("write after hijack: %v", err))
				}
				_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
				_ = brw.Flush()
				// Echo one line, through the returned reader.
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				_, _ = brw.WriteString("echo " + line)
				_ = brw.Flush()
			})
			fs := startFront(t, handler, nil)
			plain := startPlain(t, handler)
			for _, addr := range []string{fs.addr, plain} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				req := "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
				if slow {
					_, _ = io.WriteString(c, req)
					time.Sleep(2 * frontWatchAfter)
					_, _ = io.WriteString(c, "early\n")
				} else {
					_, _ = io.WriteString(c, req+"early\n")
				}
				got, _ := io.ReadAll(c)
				_ = c.Close()
				want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\necho early\n"
				if string(got) != want {
					t.Errorf("%s: got %q, want %q", addr, got, want)
				}
			}
		})
	}
}

// FuzzFrontAgainstNetHTTP: whatever bytes a client sends, the front
// answers them as net/http's own server answers them (every answer, in
// order, Date aside) and never lets a handler see a request net/http
// would not have passed it.
func FuzzFrontAgainstNetHTTP(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"HEAD /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /z HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /q HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nhOsT: a\r\n\r\n",
		"GET http://other/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n x: folded\r\n\r\n",
		"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + strings.Repeat("c", frontBufferSize) + "\r\n\r\n",
		"GET / HTTP/1.1\r\nHo",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\r\n\r\nGET /q HTTP/1.1\r\nHost: a\r\n\r\n",
		"PUT /skip HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /q HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /close HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /q HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /part HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST /skip HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"POST /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 1\r\n\r\nx",
	} {
		f.Add([]byte(seed))
	}
	// The handler says what it saw; a request the front passes on must
	// read the same. Under /skip it leaves the body, under /close it
	// closes it unread, under /part it reads two bytes of it.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b []byte
		var err error
		switch {
		case strings.HasPrefix(r.URL.Path, "/skip"):
		case strings.HasPrefix(r.URL.Path, "/close"):
			err = r.Body.Close()
		case strings.HasPrefix(r.URL.Path, "/part"):
			b = make([]byte, 2)
			var n int
			n, err = io.ReadFull(r.Body, b)
			b = b[:n]
		default:
			b, err = io.ReadAll(r.Body)
		}
		fmt.Fprintf(w, "err=%v trailer=%q ", err, r.Trailer)
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fmt.Fprintf(w, "%s %q %s host=%q body=%q close=%v", r.Method, r.RequestURI, r.Proto, r.Host, b, r.Close)
		for _, k := range keys {
			fmt.Fprintf(w, " %s=%q", k, r.Header[k])
		}
	})
	fs, plain := startFront(f, handler, nil), startPlain(f, handler)
	f.Fuzz(func(t *testing.T, in []byte) {
		if bytes.HasPrefix(in, []byte("PRI ")) {
			// HTTP/2 (TestFrontHandsOverHTTP2): whether its server
			// writes its settings before it sees the client close
			// is a matter of timing.
			t.Skip()
		}
		got, want := sendAll(t, fs.addr, in), sendAll(t, plain, in)
		if got != want {
			t.Fatalf("sent %q\nfront answered  %q\nnet/http answered %q", in, got, want)
		}
	})
}

// sendAll writes in to a new connection to addr, closes its writing
// side and returns everything the server wrote until it closed, Date
// values blanked.
func sendAll(t *testing.T, addr string, in []byte) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(in); err != nil {
		return "write failed"
	}
	_ = c.(*net.TCPConn).CloseWrite()
	out, _ := io.ReadAll(c)
	return dateLine.ReplaceAllString(string(out), "Date: (a date)\r\n")
}

var dateLine = regexp.MustCompile(`Date: [^\r\n]*\r\n`)

// TestFrontHandsOverHTTP2: HTTP/2 with prior knowledge, as Envoy speaks
// it to an h2c upstream, reaches net/http's HTTP/2 server.
func TestFrontHandsOverHTTP2(t *testing.T) {
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+r.URL.Path)
	}), nil)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	for _, path := range []string{"/one", "/two"} {
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + fs.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if want := "HTTP/2.0 " + path; string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
	}
}

// setThenWrite is a handler that sets the header pairs kv, then writes
// body.
func setThenWrite(body string, kv ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(kv); i += 2 {
			w.Header().Set(kv[i], kv[i+1])
		}
		_, _ = io.WriteString(w, body)
	}
}

// flakyListener fails its first Accept as a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	failed atomic.Bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestFrontWaitsOutAcceptFailures: running out of file descriptors
// pauses accepting, as under net/http, instead of ending the server.
func TestFrontWaitsOutAcceptFailures(t *testing.T) {
	ln, srv := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "served")
	}))
	fr := newFront(&flakyListener{Listener: ln}, srv, context.Background())
	done := make(chan error, 1)
	go func() { done <- fr.serve() }()
	defer func() {
		fr.close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("front serve: %v", err)
		}
	}()
	if res := exchange(t, ln.Addr().String(), "GET / HTTP/1.1\r\nHost: a\r\n\r\n", http.MethodGet); res.body != "served" {
		t.Fatalf("after the accept failure: %+v", res)
	}
}

// TestFrontHandedConnectionSwitches: a protocol switch on a connection
// the front handed to net/http (a POST came first) gets a connection
// that still half-closes and that the readiness poller can watch, as a
// hijacked one from the front does.
func TestFrontHandedConnectionSwitches(t *testing.T) {
	type probe struct {
		halfClosed, pollable bool
		early                string
	}
	probes := make(chan probe, 1)
	fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, "posted")
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		var p probe
		p.early, _ = brw.ReadString('\n')
		if sc, ok := c.(syscall.Conn); ok {
			_, err := sc.SyscallConn()
			p.pollable = err == nil
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			p.halfClosed = cw.CloseWrite() == nil
		}
		// Half-closed, it still reads what the client sends.
		line, _ := brw.ReadString('\n')
		p.early += line
		probes <- p
	}), nil)
	c, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"+
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	if res, err = http.ReadResponse(br, &http.Request{Method: http.MethodGet}); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("switch: %v, %v", res, err)
	}
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the server's half-close: byte %q, %v; want EOF", b, err)
	}
	_, _ = io.WriteString(c, "late\n")
	p := <-probes
	if !p.halfClosed || !p.pollable || p.early != "early\nlate\n" {
		t.Fatalf("handed connection: %+v; want half-closed, pollable, early\\nlate\\n read", p)
	}
}
