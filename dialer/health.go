package dialer

import (
	"context"
	"net/http"
	"time"

	"github.com/wsedge/wsedge/coderhttp"
)

// HealthCheck contributes to /healthz-report. Errors make the primary
// consider the proxy unhealthy; warnings are shown to admins.
type HealthCheck interface {
	CheckHealth(ctx context.Context) (errs, warnings []string)
}

// HealthCheckFunc adapts a function to HealthCheck.
type HealthCheckFunc func(ctx context.Context) (errs, warnings []string)

// CheckHealth calls f.
func (f HealthCheckFunc) CheckHealth(ctx context.Context) (errs, warnings []string) { return f(ctx) }

// healthCheckTimeout bounds all checks of one report; the primary polls
// with its own short timeout.
const healthCheckTimeout = 5 * time.Second

// healthReport is Coder's ProxyHealthReport; nil slices encode as null as
// they do in Coder.
type healthReport struct {
	Errors   []string `json:"errors"`
	Warnings []string `json:"warnings"`
}

func (s *Server) serveHealthReport(w http.ResponseWriter, r *http.Request) {
	if s.shuttingDown.Load() {
		coderhttp.WriteJSON(w, http.StatusInternalServerError, "workspace proxy in middle of shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthCheckTimeout)
	defer cancel()
	var rep healthReport
	for _, c := range s.health {
		e, wn := c.CheckHealth(ctx)
		rep.Errors = append(rep.Errors, e...)
		rep.Warnings = append(rep.Warnings, wn...)
	}
	coderhttp.WriteJSON(w, http.StatusOK, rep)
}

// buildInfo is the subset of Coder's BuildInfoResponse a proxy fills; the
// other fields are zero-valued as in Coder's proxy.
type buildInfo struct {
	ExternalURL           string `json:"external_url"`
	Version               string `json:"version"`
	DashboardURL          string `json:"dashboard_url"`
	Telemetry             bool   `json:"telemetry"`
	WorkspaceProxy        bool   `json:"workspace_proxy"`
	AgentAPIVersion       string `json:"agent_api_version"`
	ProvisionerAPIVersion string `json:"provisioner_api_version"`
	UpgradeMessage        string `json:"upgrade_message"`
	DeploymentID          string `json:"deployment_id"`
	WebPushPublicKey      string `json:"webpush_public_key"`
}

// ExternalURL is where this build's source lives; Coder reports its
// commit URL in the same field.
const ExternalURL = "https://github.com/wsedge/wsedge"

func (s *Server) serveBuildInfo(w http.ResponseWriter, _ *http.Request) {
	coderhttp.WriteJSON(w, http.StatusOK, buildInfo{
		ExternalURL:     ExternalURL,
		Version:         s.version,
		DashboardURL:    s.dashboardURL.String(),
		WorkspaceProxy:  true,
		AgentAPIVersion: "1.0",
	})
}
