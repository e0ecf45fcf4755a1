package dialer

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
)

// syncRequest builds a request as the dialer hands one to the
// synchronous round trip: target path?query, host, header lines
// "Key: value" separated by newlines.
func syncRequest(method, host, target, headers string, close bool) (*http.Request, bool) {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}
	u.Scheme, u.Host = "http", host
	req := (&http.Request{Method: method, URL: u, Host: host, Header: http.Header{}, Close: close}).WithContext(context.Background())
	for line := range strings.SplitSeq(headers, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, false
		}
		if k == "User-Agent" && v == "-" {
			req.Header[k] = []string{} // present, no value
			continue
		}
		req.Header[k] = append(req.Header[k], v)
	}
	return req, syncEligible(req)
}

func writeBoth(t *testing.T, req *http.Request) (ours, theirs []byte, ourErr, theirErr error) {
	t.Helper()
	var a, b bytes.Buffer
	wa, wb := bufio.NewWriter(&a), bufio.NewWriter(&b)
	ourErr = writeSyncRequest(wa, req)
	theirErr = req.Write(wb)
	_ = wa.Flush()
	_ = wb.Flush()
	return a.Bytes(), b.Bytes(), ourErr, theirErr
}

// FuzzWriteSyncRequest holds writeSyncRequest to req.Write's bytes and
// errors for every request the synchronous round trip takes.
func FuzzWriteSyncRequest(f *testing.F) {
	envoyHeaders := "Accept: */*\nCookie: a=b\nX-Forwarded-For: 127.0.0.1\nX-Forwarded-Proto: http\nX-Request-Id: 7d1e\nUser-Agent: curl/8.5.0\nAccept-Encoding: gzip, br"
	f.Add(true, "code--main--alice--wsedge.apps.example.test", "/index.html?x=1&y=%20", envoyHeaders, false)
	f.Add(false, "127.0.0.1:8080", "/", "", false)
	f.Add(true, "[fe80::1%25eth0]:80", "/", "Accept: a", false)
	f.Add(true, "bücher.example", "/", "", false)
	f.Add(true, "bad host", "/", "", false)
	f.Add(true, "h", "/a?b=\x01", "", false)
	f.Add(true, "h", "/", "User-Agent:-", false)
	f.Add(true, "h", "/", "User-Agent:  padded\t\nUser-Agent: second", false)
	f.Add(true, "h", "/", "Connection: keep-alive, CLOSE", true)
	f.Add(true, "h", "/", "Connection: closed", true)
	f.Add(true, "h", "/", "Upgrade: websocket\nConnection: Upgrade\nSec-Websocket-Key: abc", false)
	f.Add(true, "h", "/", "Host: other\nContent-Length: 0\nTrailer: x\nx-lower: v\nZ: 1\nA: \t2 ", false)
	f.Add(true, "", "*", "", false)
	f.Fuzz(func(t *testing.T, get bool, host, target, headers string, close bool) {
		method := http.MethodHead
		if get {
			method = http.MethodGet
		}
		req, ok := syncRequest(method, host, target, headers, close)
		if !ok {
			return
		}
		ours, theirs, ourErr, theirErr := writeBoth(t, req)
		if (ourErr == nil) != (theirErr == nil) {
			t.Fatalf("errors differ: ours %v, net/http %v", ourErr, theirErr)
		}
		if ourErr == nil && !bytes.Equal(ours, theirs) {
			t.Fatalf("bytes differ:\nours    %q\nnet/http %q", ours, theirs)
		}
	})
}

func TestWriteSyncRequestWire(t *testing.T) {
	req, ok := syncRequest(http.MethodGet, "app.example", "/p?q=1", "Cookie: a=b\nAccept: */*\nUser-Agent: ua/1", false)
	if !ok {
		t.Fatal("not eligible")
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writeSyncRequest(w, req); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	want := "GET /p?q=1 HTTP/1.1\r\nHost: app.example\r\nUser-Agent: ua/1\r\nAccept: */*\r\nCookie: a=b\r\n\r\n"
	if buf.String() != want {
		t.Fatalf("wrote %q, want %q", buf.String(), want)
	}
}

// A trace that watches the writing gets its calls: the request goes to
// req.Write.
func TestWriteSyncRequestTraceHooks(t *testing.T) {
	req, _ := syncRequest(http.MethodGet, "app.example", "/", "Accept: a", false)
	var fields []string
	wrote := false
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		WroteHeaderField: func(k string, _ []string) { fields = append(fields, k) },
		WroteHeaders:     func() { wrote = true },
	}))
	if err := writeSyncRequest(bufio.NewWriter(io.Discard), req); err != nil {
		t.Fatal(err)
	}
	if !wrote || strings.Join(fields, ",") != "Host,User-Agent,Accept" {
		t.Fatalf("trace saw fields %v, headers written %v", fields, wrote)
	}
}

func BenchmarkWriteSyncRequest(b *testing.B) {
	req, ok := syncRequest(http.MethodGet, "code--main--alice--wsedge.apps.example.test", "/api/items?page=2",
		"Accept: */*\nAccept-Encoding: gzip, br\nAccept-Language: en-US\nCookie: theme=dark\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156\nX-Forwarded-For: 192.0.2.1\nX-Forwarded-Host: code--main--alice--wsedge.apps.example.test\nX-Forwarded-Proto: https\nX-Request-Id: 0f8fad5b-d9cb-469f-a165-70867728950e\nTraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false)
	if !ok {
		b.Fatal("not eligible")
	}
	w := bufio.NewWriter(io.Discard)
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = req.Write(w)
		}
	})
	b.Run("sync", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = writeSyncRequest(w, req)
		}
	})
}
