package authz

import (
	"context"
	"net/http"
	"net/netip"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
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

// inputFromCheck reads the parts of a CheckRequest the pipeline uses.
func inputFromCheck(req *authv3.CheckRequest) *Input {
	attrs := req.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	in := &Input{
		Method:    httpReq.GetMethod(),
		Host:      httpReq.GetHost(),
		Path:      httpReq.GetPath(),
		Scheme:    httpReq.GetScheme(),
		RequestID: httpReq.GetId(),
		Header:    make(http.Header, len(httpReq.GetHeaders())),
	}
	for k, v := range httpReq.GetHeaders() {
		if strings.HasPrefix(k, ":") {
			continue
		}
		in.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		if a, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			in.Peer = a
		}
	}
	return in
}

// checkResponse builds Envoy's answer from a decision.
func checkResponse(d Decision) *authv3.CheckResponse {
	if !d.Allow {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
				Headers: headerOptions(d.Header, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				Body:    string(d.Body),
			}},
		}
	}
	ok := &authv3.OkHttpResponse{
		Headers:              headerOptions(d.UpstreamHeader, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		HeadersToRemove:      lower(d.UpstreamRemove),
		ResponseHeadersToAdd: headerOptions(d.ResponseHeader, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
	}
	resp := &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
	if len(d.Metadata) > 0 {
		fields := make(map[string]*structpb.Value, len(d.Metadata))
		for k, v := range d.Metadata {
			fields[k] = structpb.NewStringValue(v)
		}
		resp.DynamicMetadata = &structpb.Struct{Fields: fields}
	}
	return resp
}

// headerOptions converts headers in a stable order; repeated values (such
// as several Set-Cookie lines) stay separate headers.
func headerOptions(h http.Header, action corev3.HeaderValueOption_HeaderAppendAction) []*corev3.HeaderValueOption {
	if len(h) == 0 {
		return nil
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []*corev3.HeaderValueOption
	for _, k := range keys {
		for i, v := range h[k] {
			a := action
			if i > 0 {
				a = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
			out = append(out, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: strings.ToLower(k), Value: v},
				AppendAction: a,
			})
		}
	}
	return out
}

func lower(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToLower(s)
	}
	return out
}
