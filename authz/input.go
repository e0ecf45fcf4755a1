package authz

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Input is one request as Envoy describes it to the Check call, in our own
// terms.
type Input struct {
	Method string
	// Host is the request's :authority (Host header), as the client sent it.
	Host string
	// Path is the raw request target: escaped path and query.
	Path string
	// Header holds the request headers Envoy forwarded, canonicalised.
	Header http.Header
	// Peer is the address of the client as Envoy saw it (the downstream
	// remote address after Envoy's XFF processing).
	Peer netip.Addr
	// Scheme is "https" or "http" as Envoy saw the request.
	Scheme string
	// RequestID is Envoy's x-request-id, for logs.
	RequestID string

	query   url.Values
	cookies []*http.Cookie
	parsed  struct{ query, cookies bool }
}

// Query returns the parsed query; a malformed query yields what can be
// read of it, as Go's server does.
func (in *Input) Query() url.Values {
	if !in.parsed.query {
		in.query, _ = url.ParseQuery(in.RawQuery())
		in.parsed.query = true
	}
	return in.query
}

// Cookies returns the request's cookies.
func (in *Input) Cookies() []*http.Cookie {
	if !in.parsed.cookies {
		in.cookies = parseCookies(in.Header)
		in.parsed.cookies = true
	}
	return in.cookies
}

// EscapedPath returns the path part of the request target, still escaped.
func (in *Input) EscapedPath() string {
	p, _, _ := strings.Cut(in.Path, "?")
	return p
}

// RawQuery returns the query part of the request target, without the "?".
func (in *Input) RawQuery() string {
	_, q, _ := strings.Cut(in.Path, "?")
	return q
}

// wantsHTML reports whether the client is a browser that should get HTML
// error pages rather than JSON.
func (in *Input) wantsHTML() bool {
	accept := in.Header.Get("Accept")
	return accept == "" || strings.Contains(accept, "text/html") || strings.Contains(accept, "*/*")
}
