package dialer

import (
	"errors"
	"net/http"
	"strings"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
)

// route dispatches a request. The dashboard's latency probe comes first:
// Coder's proxy mounts /latency-check on a root router in front of
// everything else, so it is answered on every host, app hosts included,
// and never reaches an app (Envoy lets it through without ext_authz for
// that reason). Subdomain apps come next, as in Coder, where the
// subdomain middleware runs before all other routing: an app's own
// /healthz must reach the app.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	raw := rawPath(r)
	if raw == "/latency-check" {
		setRouteLabel(r, "latency-check")
		s.serveLatencyCheck(w, r)
		return
	}
	// Everything is routed on the raw path, as authz saw it (both must
	// parse the same app) and as Envoy matched its exact routes.
	path := raw
	isDERP := path == "/derp" || strings.HasPrefix(path, "/derp/")
	rt, err := s.router.Route(r.Host, raw)
	if rt.Kind != appurl.KindSubdomainApp && rt.Kind != appurl.KindLogout {
		// What Coder's proxy adds to everything its subdomain-app
		// handler (the logout host's included) does not answer.
		coderhttp.SetProxyHeaders(w.Header(), s.version)
	}
	if err != nil {
		s.routeError(w, r, rt, err, isDERP)
		return
	}
	switch rt.Kind {
	case appurl.KindSubdomainApp, appurl.KindPathApp:
		setRouteLabel(r, rt.Kind.String())
		s.serveApp(w, r, rt)
		return
	case appurl.KindTerminal:
		setRouteLabel(r, rt.Kind.String())
		s.serveTerminal(w, r, rt)
		return
	case appurl.KindLogout:
		setRouteLabel(r, "logout")
		http.Redirect(w, r, s.accessURL.String(), http.StatusSeeOther)
		return
	}
	switch {
	case path == "/healthz":
		setRouteLabel(r, "healthz")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("OK"))
	case path == "/healthz-report":
		setRouteLabel(r, "healthz-report")
		s.serveHealthReport(w, r)
	case path == "/api/v2/buildinfo":
		setRouteLabel(r, "buildinfo")
		s.serveBuildInfo(w, r)
	case isDERP:
		setRouteLabel(r, "derp")
		s.serveDERP(w, r)
	default:
		setRouteLabel(r, "unknown")
		s.writePage(w, coderhttp.Page{
			Status:      http.StatusBadRequest,
			Title:       "Head to the Dashboard",
			HideStatus:  true,
			Description: "Workspace proxies route traffic for terminals and apps directly to your workspace. This page must be opened from the dashboard.",
		})
	}
}

// routeError answers requests that look like app requests but are
// malformed, with the pages Coder's proxy renders for them.
func (s *Server) routeError(w http.ResponseWriter, r *http.Request, rt appurl.Route, err error, isDERP bool) {
	setRouteLabel(r, "invalid")
	var invalid *appurl.InvalidAppURLError
	switch {
	case errors.Is(err, appurl.ErrMissingHost):
		if isDERP {
			setRouteLabel(r, "derp")
			s.serveDERP(w, r)
			return
		}
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Could not determine request Host."})
	case errors.Is(err, appurl.ErrMeUsername):
		s.writePage(w, coderhttp.Page{
			Status:      http.StatusNotFound,
			Title:       "Application Not Found",
			Description: "Applications must be accessed with the full username, not @me.",
		})
	case errors.As(err, &invalid) && rt.Kind == appurl.KindSubdomainApp:
		s.writePage(w, coderhttp.Page{
			Status:      http.StatusBadRequest,
			Title:       "Invalid Application URL",
			Description: "Could not parse subdomain application URL: " + invalid.Err.Error(),
		})
	default:
		s.writePage(w, coderhttp.Page{
			Status:      http.StatusBadRequest,
			Title:       "Invalid Application URL",
			Description: err.Error(),
		})
	}
}

func (s *Server) serveDERP(w http.ResponseWriter, r *http.Request) {
	if s.derp == nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "DERP is disabled on this proxy."})
		return
	}
	if isUpgrade(r) {
		s.upgrades.add()
		defer s.upgrades.done()
	}
	s.derp.ServeHTTP(w, r)
}

// serveLatencyCheck answers the dashboard's latency probes, readable
// cross-origin with timing details.
func (s *Server) serveLatencyCheck(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Headers", "*")
	h.Set("Access-Control-Allow-Methods", "*")
	h.Set("Access-Control-Allow-Credentials", "false")
	h.Set("Timing-Allow-Origin", "*")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("OK"))
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != ""
}
