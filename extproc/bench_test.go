package extproc

import (
	"context"
	"net/http"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/envoy"
)

const envoyFilterName = envoy.ExtProcFilter

func structString(s string) *structpb.Value { return structpb.NewStringValue(s) }

// staticOwner says every app is alice's, as a warm owner cache would.
type staticOwner struct{}

func (staticOwner) Owner(context.Context, appurl.Request) (uuid.UUID, error) { return alice, nil }

// noopProcessor answers every message with "continue, no changes".
type noopProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noopProcessor) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
		if req.GetRequestHeaders() != nil {
			resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// BenchmarkProcess is the cost of one app response through the processor
// over loopback gRPC, one stream per response as Envoy opens them, next to
// a processor that changes nothing: the difference is the policy's own
// per-message cost.
func BenchmarkProcess(b *testing.B) {
	md := authzMetadata("subdomain", "simple", alice.String())
	msg := responseHeaders(md, "via_upstream", ":status", "200", "content-type", "text/html",
		"access-control-allow-origin", "*", "vary", "Origin, Accept-Encoding", "set-cookie", "coder_signed_app_token=x", "set-cookie", "a=1")
	msg.Attributes[envoyFilterName].Fields[edgewire.HostAttribute] = structString(targetHost)
	msg.Attributes[envoyFilterName].Fields[edgewire.MethodAttribute] = structString("GET")
	msg.Attributes[envoyFilterName].Fields[edgewire.OriginAttribute] = structString(aliceOrigin)
	for _, bc := range []struct {
		name string
		srv  extprocv3.ExternalProcessorServer
	}{
		{"policy", benchProcessor(b)},
		{"noop", noopProcessor{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := serve(b, bc.srv)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				exchange(b, c, ctx, msg)
			}
		})
	}
}

// BenchmarkResponsePolicy is the decision alone, without gRPC.
func BenchmarkResponsePolicy(b *testing.B) {
	p := &benchProcessor(b).policy
	ex := &Exchange{Method: "GET", Host: targetHost, Origin: aliceOrigin, App: simpleApp}
	h := http.Header{"Access-Control-Allow-Origin": {"*"}, "Vary": {"Origin, Accept-Encoding"}, "Set-Cookie": {"coder_signed_app_token=x", "a=1"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d := p.response(ctx, ex, h)
		if d.Outcome != outcomeCORSAllowed {
			b.Fatal(d.Outcome)
		}
	}
}

func benchProcessor(b *testing.B) *Processor {
	p, err := New(Options{WildcardHostname: testWildcard, Owners: staticOwner{}})
	if err != nil {
		b.Fatal(err)
	}
	return p
}
