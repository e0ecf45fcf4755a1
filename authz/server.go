package authz

import (
	"context"
	"errors"
	"net"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// Server is the gRPC server Envoy talks to: Authorization, the standard
// health service, and whatever else registers on it (ext_proc).
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
}

// ServerOption adds to the gRPC server built by NewServer.
type ServerOption func(*serverOptions)

type serverOptions struct {
	extProc extprocv3.ExternalProcessorServer
}

// WithExtProc registers Envoy's ext_proc service (package extproc) on the
// same gRPC server, so Envoy reaches both filters through one cluster.
func WithExtProc(p extprocv3.ExternalProcessorServer) ServerOption {
	return func(o *serverOptions) { o.extProc = p }
}

// NewServer builds the gRPC server around svc. Keepalive settings suit
// Envoy, which holds a few long-lived HTTP/2 connections per worker and
// pings them.
func NewServer(svc *Service, reg prometheus.Registerer, opts ...ServerOption) *Server {
	var o serverOptions
	for _, opt := range opts {
		opt(&o)
	}
	g := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.MaxConcurrentStreams(10000),
	)
	authv3.RegisterAuthorizationServer(g, &grpcServer{svc: svc, metrics: newMetrics(reg)})
	registerInFlight(reg, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if o.extProc != nil {
		extprocv3.RegisterExternalProcessorServer(g, o.extProc)
		hs.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	return &Server{GRPC: g, Health: hs}
}

// Serve serves on ln until ctx ends, then stops gracefully: health turns
// NOT_SERVING first so Envoy's health checks move traffic away, in-flight
// Checks finish, and after grace the rest are cut.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.GRPC.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		s.GRPC.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
