package devagent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func get(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

func newReq(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestDemoAppPageShowsWhatItReceived(t *testing.T) {
	srv := httptest.NewServer(DemoApp(nil))
	defer srv.Close()

	req := newReq(t, http.MethodGet, srv.URL+"/some/path?a=1&b=<x>")
	req.Host = "code--main--dev--alice.apps.example.com"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Cookie", "theme=dark; session_secret=hunter2")
	resp, body := get(t, req)

	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page := string(body)
	for _, want := range []string{
		"<title>wsedge demo app</title>",
		`<td id="method">GET</td>`,
		`<td id="path">/some/path</td>`,
		`<td id="query">a=1&amp;b=&lt;x&gt;</td>`, // escaped, not injected
		`<td id="host">code--main--dev--alice.apps.example.com</td>`,
		`<td id="x-forwarded-for">203.0.113.7</td>`,
		`<td id="x-forwarded-proto">https</td>`,
		`<td id="cookie-names">theme, session_secret</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q\n%s", want, page)
		}
	}
	if strings.Contains(page, "hunter2") {
		t.Error("page shows a cookie value")
	}
}

func TestDemoAppJSONEcho(t *testing.T) {
	srv := httptest.NewServer(DemoApp(nil))
	defer srv.Close()

	for _, url := range []string{srv.URL + "/echo?q=1", srv.URL + "/any?q=1&format=json"} {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("twelve bytes"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", "198.51.100.1, 10.0.0.1")
		req.Header.Set("X-Custom", "v1")
		req.Header.Add("X-Custom", "v2")
		req.Header.Set("Cookie", "a=1; b=2")
		resp, body := get(t, req)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: status %d, type %q", url, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var got Received
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s: %v\n%s", url, err, body)
		}
		if got.Method != "POST" || got.XForwardedFor != "198.51.100.1, 10.0.0.1" || got.BodyBytes != 12 || got.TLS {
			t.Errorf("%s: got %+v", url, got)
		}
		if !strings.Contains(got.RawQuery, "q=1") {
			t.Errorf("%s: raw query %q", url, got.RawQuery)
		}
		if strings.Join(got.Headers["X-Custom"], ",") != "v1,v2" {
			t.Errorf("%s: X-Custom %q", url, got.Headers["X-Custom"])
		}
		if strings.Join(got.CookieNames, ",") != "a,b" {
			t.Errorf("%s: cookie names %q", url, got.CookieNames)
		}
	}
}

func TestDemoAppBytes(t *testing.T) {
	srv := httptest.NewServer(DemoApp(nil))
	defer srv.Close()

	for _, n := range []int{0, 1, 1024, 3<<20 + 5} {
		resp, body := get(t, newReq(t, http.MethodGet, srv.URL+"/bytes?n="+strconv.Itoa(n)))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("n=%d: status %d", n, resp.StatusCode)
		}
		if resp.ContentLength != int64(n) {
			t.Errorf("n=%d: Content-Length %d", n, resp.ContentLength)
		}
		if !bytes.Equal(body, PatternBytes(n)) {
			t.Errorf("n=%d: body differs (len %d)", n, len(body))
		}
	}
	for _, q := range []string{"", "n=-1", "n=abc", "n=999999999999"} {
		resp, _ := get(t, newReq(t, http.MethodGet, srv.URL+"/bytes?"+q))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: status %d, want 400", q, resp.StatusCode)
		}
	}
}

func TestDemoAppCORS(t *testing.T) {
	srv := httptest.NewServer(DemoApp(nil))
	defer srv.Close()

	resp, body := get(t, newReq(t, http.MethodGet, srv.URL+"/cors"))
	if resp.StatusCode != http.StatusOK || string(body) != "cors\n" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("ACAO %q", got)
	}
	if got := resp.Header.Get("Vary"); got != "Origin, Accept-Encoding" {
		t.Errorf("Vary %q", got)
	}
	resp, _ = get(t, newReq(t, http.MethodOptions, srv.URL+"/cors"))
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("preflight: status %d ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

func TestDemoAppSetCookie(t *testing.T) {
	srv := httptest.NewServer(DemoApp(nil))
	defer srv.Close()

	resp, _ := get(t, newReq(t, http.MethodGet, srv.URL+"/set-cookie?name=coder_session_token&value=evil"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 1 || got[0] != "coder_session_token=evil; Path=/" {
		t.Errorf("Set-Cookie %q", got)
	}
	resp, _ = get(t, newReq(t, http.MethodGet, srv.URL+"/set-cookie?name=bad%20name&value=x"))
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("invalid name: status %d Set-Cookie %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}
}

func testWebsocketEcho(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.SetReadLimit(MaxEchoMessage)
	big := PatternBytes(3 << 20)
	for _, m := range []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello")},
		{websocket.MessageBinary, []byte{0, 1, 2, 255}},
		{websocket.MessageBinary, big},
		{websocket.MessageText, []byte("")},
	} {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("write: %v", err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Fatalf("echo of %v (%d bytes) came back as %v (%d bytes)", m.typ, len(m.data), typ, len(got))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestWebsocketEchoApp(t *testing.T) {
	srv := httptest.NewServer(WebsocketEchoApp(nil))
	defer srv.Close()
	testWebsocketEcho(t, srv.URL+"/anything")

	resp, body := get(t, newReq(t, http.MethodGet, srv.URL+"/"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "websocket echo") {
		t.Errorf("plain GET: %d %q", resp.StatusCode, body)
	}

	// Too large a message closes the connection with 1009.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_ = c.Write(ctx, websocket.MessageBinary, make([]byte, MaxEchoMessage+1))
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("oversized message: %v, want close 1009", err)
	}
}

func TestDemoAppWebsocketPath(t *testing.T) {
	srv := httptest.NewServer(DemoApp(nil))
	defer srv.Close()
	testWebsocketEcho(t, srv.URL+"/ws")
}
