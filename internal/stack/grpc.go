package stack

import (
	"context"
	"errors"
	"net"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// edgeGRPC is the one gRPC server Envoy talks to: ext_authz (package authz),
// ext_proc (package extproc) and the standard health service, so Envoy
// reaches every filter's service through one cluster.
type edgeGRPC struct {
	server *grpc.Server
	health *health.Server
}

// newEdgeGRPC registers both services on one server. Keepalive settings
// suit Envoy, which holds a few long-lived HTTP/2 connections per worker
// and pings them. Every service starts SERVING; ServeAuthz holds
// Authorization back until the keys are in.
func newEdgeGRPC(az authv3.AuthorizationServer, proc extprocv3.ExternalProcessorServer, extra ...grpc.ServerOption) *edgeGRPC {
	opts := append([]grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.MaxConcurrentStreams(10000),
	}, extra...)
	g := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(g, az)
	extprocv3.RegisterExternalProcessorServer(g, proc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return &edgeGRPC{server: g, health: hs}
}

// setAuthorizationServing sets the health of the Authorization service and
// of the server as a whole (the empty service name probes ask for).
func (s *edgeGRPC) setAuthorizationServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
	s.health.SetServingStatus("", st)
}

// serve serves on ln until ctx ends, then stops gracefully: health turns
// NOT_SERVING first so Envoy's health checks move traffic away, in-flight
// calls finish, and after grace the rest are cut.
func (s *edgeGRPC) serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.server.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		s.server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		s.server.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
