package authz

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
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

// inputFromCheck reads the parts of a CheckRequest the pipeline uses.
func inputFromCheck(req *authv3.CheckRequest) *Input {
	attrs := req.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	in := &Input{
		Method:    httpReq.GetMethod(),
		Host:      httpReq.GetHost(),
		Path:      httpReq.GetPath(),
		Scheme:    httpReq.GetScheme(),
		RequestID: requestID(httpReq),
		Header:    make(http.Header, len(httpReq.GetHeaders())),
	}
	// One backing array for every header's one value.
	vals := make([]string, 0, len(httpReq.GetHeaders()))
	for k, v := range httpReq.GetHeaders() {
		if strings.HasPrefix(k, ":") {
			continue
		}
		vals = append(vals, v)
		in.Header[http.CanonicalHeaderKey(k)] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		if a, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			in.Peer = a
		}
	}
	return in
}

// requestIDHeader is the ID Envoy gives every request: it logs it as
// request_id in its access log and forwards it to the dialer, which logs it
// too. The CheckRequest's own id field is Envoy's stream id, a number that
// appears nowhere else, so it is only a fallback.
const requestIDHeader = "x-request-id"

// maxRequestIDLen bounds what a client-influenced header puts in a log
// line (Envoy's IDs are UUIDs).
const maxRequestIDLen = 128

func requestID(httpReq *authv3.AttributeContext_HttpRequest) string {
	id := httpReq.GetHeaders()[requestIDHeader]
	if id == "" {
		return httpReq.GetId()
	}
	if len(id) > maxRequestIDLen {
		id = id[:maxRequestIDLen]
	}
	return id
}
