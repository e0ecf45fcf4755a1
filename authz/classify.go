package authz

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/wsedge/wsedge/appurl"
)

// target is what a request asks for once classified.
type target struct {
	req appurl.Request
	// appPath is the path beneath the app's base path (path and subdomain
	// apps), used for post-login redirects.
	appPath string
	// host is the effective request host (after trusted X-Forwarded-Host).
	host string
}

// classify turns a request into an app request. It returns a decision
// instead when the request is answered without any token work: Coder's
// fixed error pages, the logout redirect, or "not an app request" (allowed
// through for the dialer to answer).
func (s *Service) classify(in *Input) (*target, *Decision) {
	host := s.effectiveHost(in)
	route, err := s.cfg.router.Route(host, in.EscapedPath())
	switch {
	case errors.Is(err, appurl.ErrMissingHost):
		if strings.HasPrefix(in.EscapedPath(), "/derp") {
			return nil, &Decision{Allow: true, Outcome: "not_app"}
		}
		d := missingHost()
		return nil, &d
	case route.Kind == appurl.KindPathApp && s.cfg.PathAppsDisabled:
		d := s.page(http.StatusForbidden, "Forbidden",
			"Path-based applications are disabled on this proxy. Use subdomain applications, or ask your administrator to enable path-based applications.",
			"path_apps_disabled")
		return nil, &d
	case errors.Is(err, appurl.ErrMeUsername):
		d := s.page(http.StatusNotFound, "Application Not Found",
			"Applications must be accessed with the full username, not @me.", "path_app_me")
		return nil, &d
	case err != nil:
		d := s.page(http.StatusBadRequest, "Invalid Application URL",
			"The application URL is not valid: "+err.Error(), "invalid_app_url")
		return nil, &d
	}
	switch route.Kind {
	case appurl.KindNone:
		return nil, &Decision{Allow: true, Outcome: "not_app"}
	case appurl.KindLogout:
		d := redirect(s.cfg.AccessURL.String(), "logout")
		return nil, &d
	}
	return &target{req: route.Request, appPath: route.AppPath, host: host}, nil
}

// effectiveHost is the Host the browser asked for: X-Forwarded-Host only
// from a trusted peer, else the request's authority.
func (s *Service) effectiveHost(in *Input) string {
	if xfh := in.Header.Get("X-Forwarded-Host"); xfh != "" && s.peerTrusted(in) {
		h, _, _ := strings.Cut(xfh, ",")
		return strings.TrimSpace(h)
	}
	return in.Host
}

func (s *Service) peerTrusted(in *Input) bool {
	if !in.Peer.IsValid() {
		return false
	}
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(in.Peer.Unmap()) {
			return true
		}
	}
	return false
}

// clientIP is the browser's address as far as trusted hops tell.
func (s *Service) clientIP(in *Input) netip.Addr {
	if v := in.Header.Get("X-Envoy-External-Address"); v != "" {
		if a, err := netip.ParseAddr(strings.TrimSpace(v)); err == nil {
			return a
		}
	}
	if xff := in.Header.Get("X-Forwarded-For"); xff != "" {
		parts := strings.Split(xff, ",")
		i := len(parts) - 1 - s.cfg.XFFTrustedHops
		if i >= 0 {
			if a, err := netip.ParseAddr(strings.TrimSpace(parts[i])); err == nil {
				return a
			}
		}
	}
	return in.Peer
}
