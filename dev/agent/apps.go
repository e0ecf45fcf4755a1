package devagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// DemoAppTitle is the HTML title of the demo app's page.
const DemoAppTitle = "wsedge demo app"

// DemoAppServer is the Server header of every demo app response: real
// apps name themselves, and a proxy should pass the name on untouched.
const DemoAppServer = "wsedge-demo-app"

// MaxBytesResponse bounds /bytes?n= so a test typo cannot exhaust memory or
// bandwidth.
const MaxBytesResponse = 256 << 20

// MaxEchoMessage is the largest websocket message the echo app accepts.
const MaxEchoMessage = 8 << 20

// Received is what the demo app saw of a request. /echo (or ?format=json)
// returns it as JSON so tests can assert what the proxy forwarded.
type Received struct {
	Method          string              `json:"method"`
	Path            string              `json:"path"`
	RequestURI      string              `json:"request_uri"`
	RawQuery        string              `json:"raw_query"`
	Host            string              `json:"host"`
	XForwardedFor   string              `json:"x_forwarded_for"`
	XForwardedProto string              `json:"x_forwarded_proto"`
	CookieNames     []string            `json:"cookie_names"`
	Headers         map[string][]string `json:"headers"`
	TLS             bool                `json:"tls"`
	BodyBytes       int64               `json:"body_bytes"`
}

// receivedFrom records r. Cookie values are deliberately left out of
// CookieNames (they may be credentials); the raw Cookie header is in Headers
// for tests that must check a cookie was stripped.
func receivedFrom(r *http.Request, bodyBytes int64) Received {
	names := []string{}
	for _, c := range r.Cookies() {
		names = append(names, c.Name)
	}
	return Received{
		Method:          r.Method,
		Path:            r.URL.Path,
		RequestURI:      r.RequestURI,
		RawQuery:        r.URL.RawQuery,
		Host:            r.Host,
		XForwardedFor:   r.Header.Get("X-Forwarded-For"),
		XForwardedProto: r.Header.Get("X-Forwarded-Proto"),
		CookieNames:     names,
		Headers:         r.Header.Clone(),
		TLS:             r.TLS != nil,
		BodyBytes:       bodyBytes,
	}
}

var demoPage = template.Must(template.New("demo").Parse(`<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body>
<h1>{{.Title}}</h1>
<table>
<tr><th>Method</th><td id="method">{{.R.Method}}</td></tr>
<tr><th>Path</th><td id="path">{{.R.Path}}</td></tr>
<tr><th>Query</th><td id="query">{{.R.RawQuery}}</td></tr>
<tr><th>Host</th><td id="host">{{.R.Host}}</td></tr>
<tr><th>X-Forwarded-For</th><td id="x-forwarded-for">{{.R.XForwardedFor}}</td></tr>
<tr><th>X-Forwarded-Proto</th><td id="x-forwarded-proto">{{.R.XForwardedProto}}</td></tr>
<tr><th>TLS</th><td id="tls">{{.R.TLS}}</td></tr>
<tr><th>Cookie names</th><td id="cookie-names">{{range $i, $n := .R.CookieNames}}{{if $i}}, {{end}}{{$n}}{{end}}</td></tr>
</table>
</body>
</html>
`))

// DemoApp returns the HTTP demo app. Routes:
//
//	/echo, or any path with ?format=json   JSON Received (headers included)
//	/bytes?n=N                            N bytes of a fixed pattern
//	/cors                                 its own CORS headers
//	/set-cookie?name=x&value=y            tries to set cookie x=y
//	/ws                                   websocket echo
//	anything else                         HTML page describing the request
func DemoApp(logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", serveEcho)
	mux.HandleFunc("/bytes", serveBytes)
	mux.HandleFunc("/cors", serveCORS)
	mux.HandleFunc("/set-cookie", serveSetCookie)
	mux.Handle("/ws", WebsocketEchoApp(logger))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") == "json" {
			serveEcho(w, r)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		var buf bytes.Buffer
		if err := demoPage.Execute(&buf, struct {
			Title string
			R     Received
		}{DemoAppTitle, receivedFrom(r, n)}); err != nil {
			http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		_, _ = w.Write(buf.Bytes())
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", DemoAppServer)
		mux.ServeHTTP(w, r)
	})
}

func serveEcho(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	body, err := json.Marshal(receivedFrom(r, n))
	if err != nil {
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// bytePattern is the repeating content of /bytes, so a test can check that
// every byte arrived in order, not just the count.
const bytePattern = "0123456789abcdefghijklmnopqrstuvwxyz\n"

// PatternBytes returns the first n bytes that /bytes?n= serves.
func PatternBytes(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = bytePattern[i%len(bytePattern)]
	}
	return out
}

// patternChunk is what /bytes writes from: a whole number of patterns, so
// consecutive writes continue the pattern. It is built once: building it
// for every request cost the agent more CPU than the rest of the response,
// a cost the benchmarks would have charged to both proxies alike.
var patternChunk = sync.OnceValue(func() []byte { return PatternBytes(len(bytePattern) * 1024) })

func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 0 || n > MaxBytesResponse {
		http.Error(w, fmt.Sprintf("n must be an integer between 0 and %d", MaxBytesResponse), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(n))
	chunk := patternChunk()
	for n > 0 {
		k := min(n, len(chunk))
		if _, err := w.Write(chunk[:k]); err != nil {
			return
		}
		n -= k
	}
}

// serveCORS answers with the app's own CORS headers, which the proxy must
// strip or keep depending on the app's CORS behaviour.
func serveCORS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	w.Header().Set("Access-Control-Allow-Headers", "*")
	w.Header().Set("Vary", "Origin, Accept-Encoding")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "cors\n")
}

// serveSetCookie tries to set an arbitrary cookie, e.g. one named like a
// Coder session cookie that the proxy must refuse.
func serveSetCookie(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := &http.Cookie{Name: q.Get("name"), Value: q.Get("value"), Path: "/"}
	if q.Has("domain") {
		c.Domain = q.Get("domain")
	}
	if err := c.Valid(); err != nil {
		http.Error(w, "invalid cookie: "+err.Error(), http.StatusBadRequest)
		return
	}
	http.SetCookie(w, c)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "set cookie %s\n", c.Name)
}

// WebsocketEchoApp returns a handler that echoes every websocket message
// (text and binary, up to MaxEchoMessage bytes) with its type. A request
// that is not a websocket upgrade gets a short text page.
func WebsocketEchoApp(logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isUpgrade(r) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, "wsedge websocket echo app: connect with a websocket client\n")
			return
		}
		// The app sits behind the proxy: any Origin the proxy let through is
		// fine here, as for most real workspace apps.
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			logger.Debug("websocket echo: accept failed", "error", err)
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(MaxEchoMessage)
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				if websocket.CloseStatus(err) == -1 && !errors.Is(err, ctx.Err()) {
					logger.Debug("websocket echo: read", "error", err)
				}
				return
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = c.Write(wctx, typ, msg)
			cancel()
			if err != nil {
				return
			}
		}
	})
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return slices.ContainsFunc(r.Header.Values("Upgrade"), func(u string) bool {
					return strings.EqualFold(strings.TrimSpace(u), "websocket")
				})
			}
		}
	}
	return false
}
