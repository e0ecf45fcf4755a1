package stack

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/extproc"
)

type noOwners struct{}

func (noOwners) Owner(context.Context, appurl.Request) (uuid.UUID, error) {
	return uuid.Nil, errors.New("no owners in this test")
}

// TestEdgeGRPCServesBothServices checks the one gRPC server Envoy talks to:
// ext_authz and ext_proc side by side, health per service (Authorization
// held back alone while keys are missing), and a graceful stop.
func TestEdgeGRPCServesBothServices(t *testing.T) {
	proc, err := extproc.New(extproc.Options{WildcardHostname: "*.apps.example.com", Owners: noOwners{}})
	if err != nil {
		t.Fatal(err)
	}
	srv := newEdgeGRPC(authz.NewAuthorizationServer(nil, nil), proc)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, l, time.Second) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	status := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health of %q: %v", svc, err)
		}
		return r.GetStatus()
	}
	authzName, extProcName := authv3.Authorization_ServiceDesc.ServiceName, extprocv3.ExternalProcessor_ServiceDesc.ServiceName
	for _, svc := range []string{"", authzName, extProcName} {
		if s := status(svc); s != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v", svc, s)
		}
	}
	srv.setAuthorizationServing(false)
	if status("") != healthpb.HealthCheckResponse_NOT_SERVING || status(authzName) != healthpb.HealthCheckResponse_NOT_SERVING || status(extProcName) != healthpb.HealthCheckResponse_SERVING {
		t.Error("Authorization held back: want it and the server NOT_SERVING, ext_proc SERVING")
	}

	// ext_proc answers through the same server: a path app's response
	// gets nosniff.
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{
			Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}},
		}}},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{edgewire.MetadataNamespace: {Fields: map[string]*structpb.Value{
			edgewire.MetaAccessMethod: structpb.NewStringValue(string(appurl.AccessMethodPath)),
			edgewire.MetaUserID:       structpb.NewStringValue(uuid.NewString()),
		}}}},
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			edgewire.CodeDetailsAttribute: structpb.NewStringValue("via_upstream"),
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	nosniff := false
	for _, h := range r.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == "x-content-type-options" && string(h.GetHeader().GetRawValue()) == "nosniff" {
			nosniff = true
		}
	}
	if !nosniff {
		t.Errorf("path app response through the edge server: %v", r)
	}
}
