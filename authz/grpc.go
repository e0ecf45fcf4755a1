package authz

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// grpcServer adapts the Service to Envoy's Authorization API.
type grpcServer struct {
	authv3.UnimplementedAuthorizationServer
	svc     *Service
	metrics *metrics
}

// NewAuthorizationServer adapts svc to Envoy's Authorization gRPC service;
// the composition root registers it on the gRPC server Envoy talks to.
// Its metrics go to reg (nil: none).
func NewAuthorizationServer(svc *Service, reg prometheus.Registerer) authv3.AuthorizationServer {
	registerInFlight(reg, svc)
	return &grpcServer{svc: svc, metrics: newMetrics(reg)}
}

// Check implements envoy.service.auth.v3.Authorization.
func (g *grpcServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	done := g.metrics.start()
	in := inputFromCheck(req)
	d := g.svc.Check(ctx, in)
	done(d.Outcome)
	// One line per Check (debug), correlated with Envoy's access log and
	// the dialer's lines by Envoy's x-request-id.
	g.svc.log.Debug("check", "request_id", in.RequestID, "outcome", d.Outcome, "allow", d.Allow, "status", d.Status, "host", in.Host)
	return checkResponse(d), nil
}
