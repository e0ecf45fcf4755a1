package dialer

import (
	"net/http"
	"net/url"
	"strings"
)

// rawPath is the request path exactly as Envoy sent it: the request target
// up to '?', the very string authz routed and decided on. Go's r.URL holds
// a decoded path and re-encodes it when the raw form holds bytes it would
// have escaped (", {, |, ^, `…), turning %2F into '/' on the way; routing or
// forwarding on that would serve a different app, or a different path,
// than the one authorised.
func rawPath(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		p, _, _ := strings.Cut(r.RequestURI, "?")
		return p
	}
	// Absolute-form or asterisk targets never come from Envoy.
	return r.URL.EscapedPath()
}

// joinRawPath joins the app URL's escaped path and the raw request path
// beneath the app with one slash between them, as httputil.ReverseProxy
// joins paths.
func joinRawPath(base, rest string) string {
	aslash, bslash := strings.HasSuffix(base, "/"), strings.HasPrefix(rest, "/")
	switch {
	case aslash && bslash:
		return base + rest[1:]
	case !aslash && !bslash:
		return base + "/" + rest
	}
	return base + rest
}

// setRawPath makes u's request target path raw, byte for byte. Go writes
// a URL's Opaque verbatim as the request target, so that carries any raw
// path — except one starting with "//", which Go would turn into an
// absolute URL. Such a path gets only the bytes Go refuses in a raw path
// escaped (its %-escapes, %2F included, stay as sent).
func setRawPath(u *url.URL, raw string) {
	if u.EscapedPath() == raw {
		return
	}
	if !strings.HasPrefix(raw, "//") {
		u.Opaque = raw
		return
	}
	esc := escapeInvalidPathBytes(raw)
	if dec, err := url.PathUnescape(esc); err == nil {
		u.Path, u.RawPath = dec, esc
	}
}

// escapeInvalidPathBytes %-escapes the bytes url.URL does not accept in a
// raw path, leaving every other byte (and existing escapes) alone.
func escapeInvalidPathBytes(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if pathByteOK(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// pathByteOK: RFC 3986 pchar, '/', '%' of an existing escape, and '[' ']'
// (which Go leaves alone, as browsers do).
func pathByteOK(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/%[]", c) >= 0
}
