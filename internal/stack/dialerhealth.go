package stack

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/wsedge/wsedge/dialer"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tailnet/coordinate"
)

func healthChecks(cfg DialerConfig, r *primary.Registrar, c *coordinate.Client) []dialer.HealthCheck {
	checks := []dialer.HealthCheck{primaryHealth{client: cfg.Primary}, registrationHealth{r.Health}, coordinationHealth{c}}
	if cfg.AuthzAddr != "" {
		checks = append(checks, authzHealth{addr: cfg.AuthzAddr})
	}
	return checks
}

// authzHealth asks authz's gRPC health service whether the Authorization
// service is serving (it is not until the primary's keys have arrived).
type authzHealth struct{ addr string }

func (a authzHealth) CheckHealth(ctx context.Context) (errs, warnings []string) {
	cc, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return []string{fmt.Sprintf("authz at %s: %v", a.addr, err)}, nil
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
	if err != nil {
		return []string{fmt.Sprintf("authz at %s is unreachable: %v", a.addr, err)}, nil
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return []string{fmt.Sprintf("authz at %s is %s", a.addr, res.GetStatus())}, nil
	}
	return nil, nil
}

// primaryHealth is the /healthz-report check of coderd's proxy: the
// primary's build info can be fetched and it is a primary. (Coder's proxy
// also warns on a major/minor version mismatch with the primary; wsedge
// has its own version line, so there is nothing to compare.)
type primaryHealth struct{ client *primary.Client }

func (p primaryHealth) CheckHealth(ctx context.Context) (errs, warnings []string) {
	bi, err := p.client.BuildInfo(ctx)
	if err != nil {
		return []string{fmt.Sprintf("Failed to fetch build info from the primary: %v", err)}, nil
	}
	if bi.WorkspaceProxy {
		return []string{fmt.Sprintf("The primary at %s claims to be a workspace proxy.", p.client.URL())}, nil
	}
	return nil, nil
}

// registrationHealth reports the registration loop: unhealthy once more
// than 10 re-registrations in a row have failed (where Coder's proxy would
// exit), a warning before that, and an error when the primary changed the
// mesh key or region (the proxy must be restarted). Failures say since
// when registration has been failing.
type registrationHealth struct {
	health func() primary.RegistrationHealth
}

func (h registrationHealth) CheckHealth(context.Context) (errs, warnings []string) {
	s := h.health()
	switch {
	case s.Conflict != nil:
		errs = append(errs, fmt.Sprintf("Registration changed on the primary; restart this proxy: %v", s.Conflict))
	case s.Unhealthy && s.ConsecutiveFailures > 0:
		errs = append(errs, fmt.Sprintf("Failed to re-register with the primary %d times in a row%s: %v", s.ConsecutiveFailures, failingFor(s), s.LastError))
	case s.Unhealthy:
		errs = append(errs, "Not registered with the primary")
	case s.ConsecutiveFailures > 0:
		warnings = append(warnings, fmt.Sprintf("Last %d re-registrations with the primary failed%s: %v", s.ConsecutiveFailures, failingFor(s), s.LastError))
	}
	return errs, warnings
}

// failingFor says how long registration has been failing, e.g.
// " for 3m20s (since 2026-01-02T03:04:05Z)".
func failingFor(s primary.RegistrationHealth) string {
	if s.FailingSince.IsZero() {
		return ""
	}
	return fmt.Sprintf(" for %s (since %s)", s.FailingFor.Round(time.Second), s.FailingSince.UTC().Format(time.RFC3339))
}

// coordinationHealth warns while the coordination stream is down: agents
// already connected keep working, new tunnels cannot be opened.
type coordinationHealth struct{ c *coordinate.Client }

func (h coordinationHealth) CheckHealth(context.Context) (errs, warnings []string) {
	if !h.c.Connected() {
		msg := "Not connected to the primary's tailnet coordinator"
		if err := h.c.LastError(); err != nil {
			msg += ": " + err.Error()
		}
		warnings = append(warnings, msg)
	}
	return nil, warnings
}

// meshHealth warns when sibling replicas' DERP could not be reached at
// the last check (the same text goes to the primary as replica_error).
type meshHealth struct{ last *atomic.Pointer[string] }

func (m meshHealth) CheckHealth(context.Context) (errs, warnings []string) {
	if e := m.last.Load(); e != nil && *e != "" {
		warnings = append(warnings, *e)
	}
	return nil, warnings
}
