package dialer

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"sync"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// writeSyncRequest writes a request syncEligible accepted (GET or HEAD,
// no body, header names and values already valid) in the bytes
// req.Write would send, without its formatting machinery: fmt, a
// transfer writer allocated per request, the header sorter. Anything
// outside the common case (a host that needs Punycode, zone removal or
// blanking, a control byte in the target, a trace that watches the
// writing) goes to req.Write, which keeps its behaviour and errors.
// FuzzWriteSyncRequest holds the two to the same bytes.
func writeSyncRequest(w *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	ruri := req.URL.RequestURI()
	if !plainHost(host) || containsCTL(ruri) || watchesWrites(httptrace.ContextClientTrace(req.Context())) {
		return req.Write(w)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(ruri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	// net/http's default is sent when the header is absent; a value is
	// sent, trimmed, when it is not empty before trimming (one of spaces
	// only goes out as an empty User-Agent line).
	ua, sendUA := "Go-http-client/1.1", true
	if vs, ok := req.Header["User-Agent"]; ok {
		sendUA = len(vs) > 0 && vs[0] != ""
		if sendUA {
			ua = textproto.TrimString(vs[0])
		}
	}
	if sendUA {
		w.WriteString("User-Agent: ")
		w.WriteString(ua)
		w.WriteString("\r\n")
	}
	if req.Close && !headerHasToken(req.Header["Connection"], "close") {
		w.WriteString("Connection: close\r\n")
	}
	keys := syncKeys.Get().(*[]string)
	ks := (*keys)[:0]
	for k := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		default:
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	for _, k := range ks {
		for _, v := range req.Header[k] {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(textproto.TrimString(v))
			w.WriteString("\r\n")
		}
	}
	clear(ks)
	*keys = ks[:0]
	syncKeys.Put(keys)
	_, err := w.WriteString("\r\n")
	return err
}

var syncKeys = sync.Pool{New: func() any { s := make([]string, 0, 32); return &s }}

// plainHost reports whether req.Write would send host as it is: ASCII
// (no Punycode conversion), a valid Host header (not blanked), no IPv6
// zone to remove.
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] >= utf8.RuneSelf || host[i] == '%' {
			return false
		}
	}
	return httpguts.ValidHostHeader(host)
}

// containsCTL reports a control byte, which req.Write refuses in the
// request target.
func containsCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// watchesWrites reports a trace with hooks req.Write calls while it
// writes (httputil.ReverseProxy's own trace only watches 1xx answers).
func watchesWrites(t *httptrace.ClientTrace) bool {
	return t != nil && (t.WroteHeaderField != nil || t.WroteHeaders != nil || t.WroteRequest != nil)
}

// headerHasToken is net/http's check for a token already among the
// Connection values: the first value only, ASCII case-insensitive, bounded
// by space, comma or tab.
func headerHasToken(vs []string, token string) bool {
	if len(vs) == 0 {
		return false
	}
	v := vs[0]
	boundary := func(b byte) bool { return b == ' ' || b == ',' || b == '\t' }
	for sp := 0; sp+len(token) <= len(v); sp++ {
		end := sp + len(token)
		if (sp > 0 && !boundary(v[sp-1])) || (end < len(v) && !boundary(v[end])) {
			continue
		}
		if asciiEqualFold(v[sp:end], token) {
			return true
		}
	}
	return false
}

// asciiEqualFold is strings.EqualFold for ASCII letters only.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
