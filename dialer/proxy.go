package dialer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/wsedge/wsedge/approute"
	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// minimumAppPort: Coder reserves agent ports below 9 (SSH, PTY, speedtest,
// agent API) for itself.
const minimumAppPort = 9

// nonCanonicalHeaders maps Go's canonical spelling of the websocket
// headers to RFC 6455's; some apps compare header names byte for byte.
var nonCanonicalHeaders = map[string]string{
	"Sec-Websocket-Accept":     "Sec-WebSocket-Accept",
	"Sec-Websocket-Extensions": "Sec-WebSocket-Extensions",
	"Sec-Websocket-Key":        "Sec-WebSocket-Key",
	"Sec-Websocket-Protocol":   "Sec-WebSocket-Protocol",
	"Sec-Websocket-Version":    "Sec-WebSocket-Version",
}

// internalHeaderPrefix marks wsedge's own headers, which never reach apps.
const internalHeaderPrefix = "X-Wsedge-"

// serveApp proxies a path or subdomain app request (protocol §7.1).
func (s *Server) serveApp(w http.ResponseWriter, r *http.Request, rt approute.Route) {
	tok, err := s.appToken(r, rt)
	if err != nil {
		s.refuseToken(w, r, err)
		return
	}

	appURL, err := url.Parse(tok.AppURL)
	if err != nil || tok.AppURL == "" {
		desc := fmt.Sprintf("Application has an invalid URL %q", tok.AppURL)
		if err != nil {
			desc += ": " + err.Error()
		}
		s.renderPage(w, r, errorPage{Status: http.StatusBadRequest, Title: "Bad Request", Description: desc, Retry: true, Dashboard: true})
		return
	}
	if p := appURL.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiResponse{
				Message: fmt.Sprintf("App URL %q has an invalid port %q.", tok.AppURL, p),
				Detail:  err.Error(),
			})
			return
		}
		if n < minimumAppPort {
			writeJSON(w, http.StatusBadRequest, apiResponse{
				Message: fmt.Sprintf("Application port %d is not permitted. Coder reserves ports less than %d for internal use.", n, minimumAppPort),
			})
			return
		}
	}

	appPath := escapedAppPath(r, rt)
	if appPath == "" {
		// Apps resolve relative URLs against their root: add the slash.
		// Like Coder, the redirect keeps only the path.
		http.Redirect(w, r, r.URL.EscapedPath()+"/", http.StatusTemporaryRedirect)
		return
	}
	if appPath == "/" && r.URL.RawQuery == "" && appURL.RawQuery != "" {
		// The app's default query (e.g. code-server's folder=) must be
		// visible to client-side code, so redirect rather than merge.
		u := *r.URL
		u.RawQuery = appURL.RawQuery
		http.Redirect(w, r, u.RequestURI(), http.StatusTemporaryRedirect)
		return
	}

	target, err := s.upstreamURL(appURL, tok, rt)
	if err != nil {
		s.renderPage(w, r, errorPage{Status: http.StatusBadRequest, Title: "Bad Request", Description: err.Error(), Retry: true, Dashboard: true})
		return
	}
	isPort := false
	if _, _, ok := appurl.PortInfo(tok.Request.AppSlugOrPort); ok {
		isPort = true
	}

	proxy := &httputil.ReverseProxy{
		Transport: s.transports.get(tok.AgentID),
		Rewrite: func(pr *httputil.ProxyRequest) {
			s.rewrite(pr, target, appPath)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.badGateway(w, r, err, target, isPort)
		},
		ErrorLog: nil,
	}

	sess := s.stats.Start(tok)
	defer sess.End()
	if isUpgrade(r) {
		s.upgrades.Add(1)
		defer s.upgrades.Done()
		s.metrics.websockets.WithLabelValues("app").Inc()
		defer s.metrics.websockets.WithLabelValues("app").Dec()
	}
	proxy.ServeHTTP(w, r)
}

// escapedAppPath is the request path beneath the app's base path, still
// escaped: "" when a path app lacks its trailing slash.
func escapedAppPath(r *http.Request, rt approute.Route) string {
	p := r.URL.EscapedPath()
	if rt.Kind == approute.KindSubdomainApp {
		if p == "" {
			return "/"
		}
		return p
	}
	// "/@user/ws/apps/app/rest" → ["", "@user", "ws", "apps", "app", "rest"]
	parts := strings.SplitN(p, "/", 6)
	if len(parts) < 6 {
		return ""
	}
	return "/" + parts[5]
}

// upstreamURL is the URL the request is sent to: the app URL's scheme and
// path, with its host replaced by the agent's tailnet address and its
// query dropped (the user's query is forwarded as-is). Port apps choose
// the scheme from the "s" suffix.
func (s *Server) upstreamURL(appURL *url.URL, tok tokens.SignedToken, rt approute.Route) (*url.URL, error) {
	u := *appURL
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.User = nil
	if _, https, ok := appurl.PortInfo(rt.Request.AppSlugOrPort); ok {
		u.Scheme = "http"
		if https {
			u.Scheme = "https"
		}
	}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return nil, fmt.Errorf("application URL %q has unsupported scheme %q", tok.AppURL, u.Scheme)
	}
	u.Host = net.JoinHostPort(AgentIP(tok.AgentID).String(), port)
	return &u, nil
}

// rewrite builds the upstream request (protocol §7.1 steps 2, 5–9).
func (s *Server) rewrite(pr *httputil.ProxyRequest, target *url.URL, appPath string) {
	out, in := pr.Out, pr.In
	decoded, err := url.PathUnescape(appPath)
	if err != nil {
		decoded = appPath
	}
	out.URL.Path = decoded
	out.URL.RawPath = appPath
	pr.SetURL(target)
	// The app sees the public host it was opened on.
	out.Host = in.Host

	// Envoy already wrote X-Forwarded-For with the client's address: keep
	// it exactly (Rewrite starts without it, so nothing is appended).
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := in.Header.Values(h); len(v) > 0 {
			out.Header[h] = append([]string(nil), v...)
		}
	}
	if out.Header.Get("X-Forwarded-Proto") == "" {
		out.Header.Set("X-Forwarded-Proto", s.accessURL.Scheme)
	}

	for k := range out.Header {
		if strings.HasPrefix(k, internalHeaderPrefix) {
			delete(out.Header, k)
		}
	}

	if cookies := out.Header.Values("Cookie"); len(cookies) > 0 {
		out.Header.Del("Cookie")
		for _, c := range cookies {
			if kept := tokens.StripCoderCookies(c); kept != "" {
				out.Header.Add("Cookie", kept)
			}
		}
	}

	for k, v := range out.Header {
		if n, ok := nonCanonicalHeaders[k]; ok {
			delete(out.Header, k)
			out.Header[n] = v
		}
	}
}

// badGateway renders Coder's 502 page when the agent cannot be reached or
// the app fails to answer.
func (s *Server) badGateway(w http.ResponseWriter, r *http.Request, err error, target *url.URL, isPort bool) {
	s.log.Info("dialer: proxying to app failed", "err", err, "host", r.Host, "path", r.URL.Path)
	page := errorPage{
		Status:      http.StatusBadGateway,
		Title:       "Bad Gateway",
		Description: "Failed to proxy request to application: " + err.Error(),
		Retry:       true,
		Dashboard:   true,
	}
	if isPort {
		if want, ok := schemeMismatch(err, target.Scheme); ok {
			page.Description += fmt.Sprintf(" This port seems to be serving %s, not %s.", strings.ToUpper(want), strings.ToUpper(target.Scheme))
			page.Extra = &pageAction{URL: switchSchemeURL(r, want), Text: "Switch to " + strings.ToUpper(want)}
		}
	}
	s.renderPage(w, r, page)
}

// schemeMismatch guesses from a transport error that the agent port
// speaks the other protocol: TLS towards a plain HTTP server, or plain
// HTTP towards a TLS server.
func schemeMismatch(err error, scheme string) (want string, ok bool) {
	var recErr tls.RecordHeaderError
	msg := err.Error()
	switch scheme {
	case "https":
		if errors.As(err, &recErr) || strings.Contains(msg, "first record does not look like a TLS handshake") {
			return "http", true
		}
	case "http":
		if strings.Contains(msg, "malformed HTTP response") || strings.Contains(msg, "server gave HTTP response") ||
			strings.Contains(msg, "\\x15\\x03") {
			return "https", true
		}
	}
	return "", false
}

// switchSchemeURL is the same subdomain app URL with the port's "s"
// suffix added or removed.
func switchSchemeURL(r *http.Request, want string) string {
	host := r.Host
	label, rest, _ := strings.Cut(host, ".")
	// The app slug-or-port is the label's first "--" part after any
	// "---" prefix.
	prefix := ""
	if i := strings.LastIndex(label, "---"); i >= 0 {
		prefix, label = label[:i+3], label[i+3:]
	}
	port, tail, _ := strings.Cut(label, "--")
	if want == "https" {
		port = strings.TrimSuffix(port, "s") + "s"
	} else {
		port = strings.TrimSuffix(port, "s")
	}
	scheme := "https"
	if r.TLS == nil && r.Header.Get("X-Forwarded-Proto") == "http" {
		scheme = "http"
	}
	u := url.URL{Scheme: scheme, Host: prefix + port + "--" + tail + "." + rest, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	return u.String()
}
