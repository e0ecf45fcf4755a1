package dialer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The common warm request — a GET or HEAD without a body to a plain-HTTP
// app — is forwarded by forwardSync rather than by the shared
// httputil.ReverseProxy: the same steps on the request and the answer
// (ReverseProxy's for a Rewrite proxy, and the dialer's rewrite), without
// what ReverseProxy spends on every request whatever it carries — a
// client trace for informational answers, a media-type parse to choose a
// flush interval, hop-by-hop deletions of headers that are not there, a
// ModifyResponse that has nothing to do outside protocol switches. That
// was 2–3 % of the dialer's CPU per warm request in a profile of
// BenchmarkWarmPathVsReference. forward_test.go holds the two side by
// side. Everything else (bodies, HTTPS apps, protocol switches) still
// goes through the ReverseProxy.

// forwardsSync reports whether serveApp forwards r (not a protocol
// switch) with forwardSync: what syncEligible takes, decided on the
// request as it came in.
func (s *Server) forwardsSync(r *http.Request, target *url.URL) bool {
	return !s.proxyOnly && target.Scheme == "http" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		r.Body == http.NoBody && r.ContentLength == 0 && len(r.TransferEncoding) == 0 && len(r.Trailer) == 0 &&
		validHeaderFields(r.Header)
}

// forwardSync sends r to the app of ex and writes its answer to w, as
// appProxy would.
func (s *Server) forwardSync(w http.ResponseWriter, r *http.Request, ex *appExchange) {
	out := r.Clone(r.Context())
	out.Body = nil
	out.Close = false
	dropHopByHop(out.Header)
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers")
	}
	// As a Rewrite proxy: the forwarding headers start empty (rewrite
	// keeps Envoy's), the query is cleaned.
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(out.Header, h)
	}
	out.URL.RawQuery = cleanQuery(out.URL.RawQuery)
	s.rewrite(&httputil.ProxyRequest{In: r, Out: out}, ex.target, ex.appPath)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // Go's own is not sent
	}
	// Informational answers (103 Early Hints) go to the client as they
	// come, until the final one.
	var mu sync.Mutex
	done := false
	ex.got1xx = func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return nil
		}
		dst := w.Header()
		for k, vv := range h {
			for _, v := range vv {
				dst.Add(k, v)
			}
		}
		w.WriteHeader(code)
		clear(dst)
		return nil
	}

	var res *http.Response
	var err error
	if syncEligible(out) {
		res, err = ex.transport.roundTripSync(out)
	} else {
		out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{Got1xxResponse: ex.got1xx}))
		res, err = ex.transport.t.RoundTrip(out)
	}
	mu.Lock()
	done = true
	mu.Unlock()
	if err != nil {
		s.badGateway(w, out, err, ex.target, ex.rt)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Not asked for: refused as ReverseProxy refuses it.
		_ = res.Body.Close()
		s.badGateway(w, out, unaskedSwitch(res.Header), ex.target, ex.rt)
		return
	}
	dropHopByHop(res.Header)
	dst := w.Header()
	for k, vv := range res.Header {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)

	// A stream (an event stream, or an answer of unknown length) goes
	// out as it comes, as ReverseProxy sends it: the header as soon as
	// the handler's goroutine lets go (so that an event stream opens
	// before its first event), then each read.
	var body io.Writer = w
	if res.ContentLength == -1 || isEventStream(res.Header.Get("Content-Type")) {
		sw := &streamWriter{w: w, flush: http.NewResponseController(w).Flush, pending: true}
		sw.t = time.AfterFunc(0, sw.flushHeader)
		defer sw.stop()
		body = sw
	}
	if err := copyAnswer(body, res.Body, s.proxyLog); err != nil {
		_ = res.Body.Close()
		if r.Context().Value(http.ServerContextKey) == nil {
			s.proxyLog.Printf("suppressing panic for copyResponse error in test; copy error: %v", err)
			return // not under a server: nothing to abort
		}
		// The answer is cut: the client must see it end short.
		panic(http.ErrAbortHandler)
	}
	_ = res.Body.Close() // fills res.Trailer
	if len(res.Trailer) > 0 {
		// Chunked, so that the trailers can follow.
		_ = http.NewResponseController(w).Flush()
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			for _, v := range vv {
				dst.Add(k, v)
			}
		}
		return
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			dst.Add(http.TrailerPrefix+k, v)
		}
	}
}

// unaskedSwitch is the error of an app that switched protocols for a
// request that asked for no switch, as ReverseProxy words it.
func unaskedSwitch(h http.Header) error {
	up := upgradeValue(h)
	switch {
	case !isPrintable(up):
		return fmt.Errorf("backend tried to switch to invalid protocol %q", up)
	case up != "":
		return fmt.Errorf("backend tried to switch protocol %q when %q was requested", up, "")
	}
	return errors.New("internal error: 101 switching protocols response with non-writable body")
}

// streamWriter writes a streamed answer: each write is flushed, and the
// header goes out by itself unless a write came first.
type streamWriter struct {
	mu      sync.Mutex
	w       io.Writer
	flush   func() error
	pending bool // the header is not flushed yet
	t       *time.Timer
}

func (sw *streamWriter) Write(p []byte) (int, error) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	n, err := sw.w.Write(p)
	_ = sw.flush()
	sw.pending = false
	return n, err
}

func (sw *streamWriter) flushHeader() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.pending {
		_ = sw.flush()
		sw.pending = false
	}
}

// stop ends the header's flush: the answer is over (finished by the
// handler's goroutine).
func (sw *streamWriter) stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.pending = false
	sw.t.Stop()
}

// copyAnswer copies an answer's body to w with a pooled buffer. A
// failure to read it, unless it is the request's end, is logged as
// ReverseProxy logs it.
func copyAnswer(w io.Writer, body io.Reader, logger *log.Logger) error {
	buf := proxyBuffers.Get()
	defer proxyBuffers.Put(buf)
	for {
		n, rerr := body.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled {
			logger.Printf("httputil: ReverseProxy read error during body copy: %v", rerr)
		}
		if n > 0 {
			m, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if m != n {
				return io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// hopByHop are the headers that concern one connection only, which a
// proxy neither forwards nor answers with (RFC 9110 §7.6.1, as
// httputil.ReverseProxy lists them).
var hopByHop = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// dropHopByHop removes the hop-by-hop headers from h, those Connection
// names too.
func dropHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// upgradeValue is the protocol h switches to, if its Connection says it
// does.
func upgradeValue(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

func isEventStream(contentType string) bool {
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(contentType)), "text/event-stream") {
		return false
	}
	base, _, _ := mime.ParseMediaType(contentType)
	return base == "text/event-stream"
}

// cleanQuery is a query as a Rewrite proxy sends it on: one with a
// semicolon or a malformed escape is re-encoded from what url.ParseQuery
// makes of it, others are kept as they are.
func cleanQuery(q string) string {
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
