package dialer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/wsedge/wsedge/edgewire"
	"google.golang.org/grpc"
)

// AuthzClient is wsedge authz's ext_authz service (authv3's client).
type AuthzClient interface {
	Check(ctx context.Context, in *authv3.CheckRequest, opts ...grpc.CallOption) (*authv3.CheckResponse, error)
}

// consultTimeout bounds one Check the dialer makes (Envoy's default
// ext_authz timeout).
const consultTimeout = 2 * time.Second

// errAuthzUnavailable is a Check that failed: answered 503, as Envoy's
// ext_authz answers when authz cannot be reached.
var errAuthzUnavailable = errors.New("authz unavailable")

// consultAuthz asks authz about a fast-path request the dialer would not
// serve, exactly as Envoy's ext_authz would have asked had jwt_authn not
// verified the cookie, and carries out the answer: a denial is written
// as Envoy writes it (done true); an allow adds authz's upstream headers
// (the token the dialer then verifies as on the cold path, the stripped
// Cookie) to r and returns the response headers authz adds (an issued
// token's Set-Cookie). The browser gets, in one round trip, the answer it
// would have had from the cold path.
func (s *Server) consultAuthz(w http.ResponseWriter, r *http.Request) (respHeader http.Header, done bool, err error) {
	ctx, cancel := context.WithTimeout(r.Context(), consultTimeout)
	defer cancel()
	res, err := s.authz.Check(ctx, checkRequest(r, s.accessURL.Scheme))
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", errAuthzUnavailable, err)
	}
	if d := res.GetDeniedResponse(); d != nil {
		// authz's answer is the whole answer: its headers replace any
		// of the same name the dialer set (X-Coder-Build-Version, nosniff).
		h := w.Header()
		for _, o := range d.GetHeaders() {
			h.Del(o.GetHeader().GetKey())
		}
		for _, o := range d.GetHeaders() {
			setOption(h, o)
		}
		status := int(d.GetStatus().GetCode())
		if status == 0 {
			status = http.StatusForbidden
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(d.GetBody()))
		return nil, true, nil
	}
	ok := res.GetOkResponse()
	if ok == nil {
		return nil, false, fmt.Errorf("%w: neither allow nor deny", errAuthzUnavailable)
	}
	for _, k := range ok.GetHeadersToRemove() {
		r.Header.Del(k)
	}
	for _, o := range ok.GetHeaders() {
		setOption(r.Header, o)
	}
	respHeader = http.Header{}
	for _, o := range ok.GetResponseHeadersToAdd() {
		setOption(respHeader, o)
	}
	return respHeader, false, nil
}

// setOption applies one of Envoy's header options to h.
func setOption(h http.Header, o *corev3.HeaderValueOption) {
	k, v := o.GetHeader().GetKey(), o.GetHeader().GetValue()
	if v == "" && len(o.GetHeader().GetRawValue()) > 0 {
		v = string(o.GetHeader().GetRawValue())
	}
	if o.GetAppendAction() == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
		h.Set(k, v)
		return
	}
	h.Add(k, v)
}

// checkRequest describes r as Envoy's ext_authz filter describes the
// request it received: method, authority, raw target, scheme, the allowed
// headers (lower-case, multiple values joined as Envoy joins them), the
// request ID, and the client address Envoy appended to X-Forwarded-For.
func checkRequest(r *http.Request, defaultScheme string) *authv3.CheckRequest {
	headers := make(map[string]string, len(edgewire.AuthzCheckHeaders))
	for _, k := range edgewire.AuthzCheckHeaders {
		if k == "host" {
			headers[k] = r.Host
			continue
		}
		vals := r.Header.Values(k)
		if len(vals) == 0 {
			continue
		}
		sep := ","
		if k == "cookie" {
			sep = "; "
		}
		headers[k] = strings.Join(vals, sep)
	}
	scheme := r.Header.Get("X-Forwarded-Proto")
	if scheme == "" {
		scheme = defaultScheme
	}
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       r.Header.Get("X-Request-Id"),
			Method:   r.Method,
			Host:     r.Host,
			Path:     target,
			Scheme:   scheme,
			Headers:  headers,
			Protocol: r.Proto,
		}},
	}}
	if peer, ok := clientAddr(r); ok {
		req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: peer.String()},
		}}}
	}
	return req
}

// clientAddr is the address Envoy appended to X-Forwarded-For (its view
// of the client), else the connection's peer.
func clientAddr(r *http.Request) (netip.Addr, bool) {
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		parts := strings.Split(xff[len(xff)-1], ",")
		if a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
			return a, true
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	return a, err == nil
}
