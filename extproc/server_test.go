package extproc

import (
	"context"
	"net"
	"net/http"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/envoy"
)

// serve runs srv's ext_proc service on a loopback gRPC server and returns
// a client connection to it.
func serve(t testing.TB, srv extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, srv)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

func newTestProcessor(t testing.TB, reg prometheus.Registerer) *Processor {
	t.Helper()
	p, err := New(Options{WildcardHostname: testWildcard, Owners: &fakeOwners{}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func headerMap(kv ...string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

// authzMetadata is what Envoy forwards after an allow.
func authzMetadata(access, cors, owner string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		edgewire.MetadataNamespace: {Fields: map[string]*structpb.Value{
			edgewire.MetaAccessMethod: structpb.NewStringValue(access),
			edgewire.MetaCORSBehavior: structpb.NewStringValue(cors),
			edgewire.MetaUserID:       structpb.NewStringValue(owner),
		}},
	}}
}

func detailsAttr(details string) map[string]*structpb.Struct {
	return map[string]*structpb.Struct{envoy.ExtProcFilter: {Fields: map[string]*structpb.Value{
		edgewire.CodeDetailsAttribute: structpb.NewStringValue(details),
	}}}
}

func requestHeaders(md *corev3.Metadata, kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		Request:         &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(kv...)}},
		MetadataContext: md,
	}
}

func responseHeaders(md *corev3.Metadata, details string, kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		Request:         &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(kv...)}},
		MetadataContext: md,
		Attributes:      detailsAttr(details),
	}
}

// exchange sends msgs on one stream and returns the answers.
func exchange(t testing.TB, c extprocv3.ExternalProcessorClient, ctx context.Context, msgs ...*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	t.Helper()
	s, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*extprocv3.ProcessingResponse
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	_ = s.CloseSend()
	return out
}

// mutationOf turns Envoy's header mutation back into a Mutation.
func mutationOf(hm *extprocv3.HeaderMutation) Mutation {
	var m Mutation
	m.Remove = append(m.Remove, hm.GetRemoveHeaders()...)
	for _, o := range hm.GetSetHeaders() {
		appendLine := o.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD && o.GetAppend().GetValue() //lint:ignore SA1019 the flag Envoy 1.40 reads
		if !appendLine && o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			panic("a set that Envoy 1.40 would treat as overwrite without saying so: " + o.String())
		}
		m.Set = append(m.Set, HeaderOp{Key: o.GetHeader().GetKey(), Value: string(o.GetHeader().GetRawValue()), Append: appendLine})
	}
	return m
}

func TestProcessSimpleSubdomain(t *testing.T) {
	p := newTestProcessor(t, prometheus.NewRegistry())
	c := serve(t, p)
	md := authzMetadata("subdomain", "simple", alice.String())
	resps := exchange(t, c, context.Background(),
		requestHeaders(md, ":method", "GET", ":authority", targetHost, "origin", aliceOrigin),
		responseHeaders(md, "via_upstream", ":status", "200", "access-control-allow-origin", "*", "vary", "Origin, Accept-Encoding",
			"set-cookie", "coder_signed_app_token=x", "set-cookie", "a=1", "set-cookie", "b=2"),
	)
	if resps[0].GetRequestHeaders() == nil || resps[0].GetRequestHeaders().GetResponse() != nil {
		t.Fatalf("request headers answer %v, want a bare continue", resps[0])
	}
	in := http.Header{"Access-Control-Allow-Origin": {"*"}, "Vary": {"Origin, Accept-Encoding"}, "Set-Cookie": {"coder_signed_app_token=x", "a=1", "b=2"}}
	got := apply(in, mutationOf(resps[1].GetResponseHeaders().GetResponse().GetHeaderMutation()))
	want := http.Header{
		"Access-Control-Allow-Origin":      {aliceOrigin},
		"Access-Control-Allow-Credentials": {"true"},
		"Vary":                             {"Origin", "Accept-Encoding"},
		"Set-Cookie":                       {"a=1", "b=2"},
	}
	for k, v := range want {
		if !slices.Equal(got.Values(k), v) {
			t.Errorf("%s = %q, want %q", k, got.Values(k), v)
		}
	}
	if n := counterValue(t, p.metrics.cookiesRemoved); n != 1 {
		t.Errorf("cookies removed metric = %v", n)
	}
}

// TestProcessResponseOnly is the usual exchange: no request-headers
// message, the request facts as attributes of the response headers.
func TestProcessResponseOnly(t *testing.T) {
	c := serve(t, newTestProcessor(t, nil))
	md := authzMetadata("subdomain", "simple", alice.String())
	msg := responseHeaders(md, "via_upstream", ":status", "200", "vary", "Origin")
	attrs := msg.Attributes[envoy.ExtProcFilter].Fields
	attrs[edgewire.HostAttribute] = structpb.NewStringValue(targetHost)
	attrs[edgewire.MethodAttribute] = structpb.NewStringValue("DELETE")
	attrs[edgewire.OriginAttribute] = structpb.NewStringValue(aliceOrigin)
	r := exchange(t, c, context.Background(), msg)[0]
	got := apply(http.Header{"Vary": {"Origin"}}, mutationOf(r.GetResponseHeaders().GetResponse().GetHeaderMutation()))
	if got.Get(hdrACAO) != aliceOrigin || got.Get(hdrACAC) != "true" || !slices.Equal(got.Values("Vary"), []string{"Origin"}) {
		t.Errorf("headers %v", got)
	}
	// Without the Origin attribute (no Origin header) nothing is allowed.
	delete(attrs, edgewire.OriginAttribute)
	r = exchange(t, c, context.Background(), msg)[0]
	if got := apply(nil, mutationOf(r.GetResponseHeaders().GetResponse().GetHeaderMutation())); got.Get(hdrACAO) != "" {
		t.Errorf("ACAO %q without an Origin", got.Get(hdrACAO))
	}
}

// TestProcessJWTMetadata checks that on Envoy's fast path (no ext_authz
// call) the app facts come from the claims jwt_authn verified.
func TestProcessJWTMetadata(t *testing.T) {
	c := serve(t, newTestProcessor(t, nil))
	claims, err := structpb.NewStruct(map[string]any{
		"request":       map[string]any{"access_method": "subdomain", "base_path": "/"},
		"cors_behavior": "simple",
		"user_id":       alice.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		edgewire.JWTAuthnFilter: {Fields: map[string]*structpb.Value{edgewire.JWTPayloadKey: structpb.NewStructValue(claims)}},
	}}
	msg := responseHeaders(md, "via_upstream", ":status", "200")
	attrs := msg.Attributes[envoy.ExtProcFilter].Fields
	attrs[edgewire.HostAttribute] = structpb.NewStringValue(targetHost)
	attrs[edgewire.MethodAttribute] = structpb.NewStringValue("GET")
	attrs[edgewire.OriginAttribute] = structpb.NewStringValue(aliceOrigin)
	r := exchange(t, c, context.Background(), msg)[0]
	got := apply(nil, mutationOf(r.GetResponseHeaders().GetResponse().GetHeaderMutation()))
	if got.Get(hdrACAO) != aliceOrigin || got.Get(hdrACAC) != "true" {
		t.Errorf("headers %v: want the token owner's origin allowed", got)
	}
}

func TestProcessPreflightPhases(t *testing.T) {
	c := serve(t, newTestProcessor(t, nil))
	pre := []string{":method", "OPTIONS", ":authority", targetHost, "origin", aliceOrigin, "access-control-request-method", "PATCH", "access-control-request-headers", "x-a", "access-control-request-headers", "x-b"}

	// Before ext_authz (marked by Envoy's initial metadata), no metadata:
	// answered from the owners alone.
	before := metadata.AppendToOutgoingContext(context.Background(), edgewire.ExtProcPhaseKey, edgewire.ExtProcPhaseBeforeAuthz)
	im := exchange(t, c, before, requestHeaders(nil, pre...))[0].GetImmediateResponse()
	if im == nil || im.GetStatus().GetCode() != http.StatusOK || im.GetDetails() != "wsedge_cors_preflight" {
		t.Fatalf("before authz: %v, want an immediate 200", im)
	}
	got := apply(nil, mutationOf(im.GetHeaders()))
	if got.Get(hdrACAO) != aliceOrigin || got.Get(hdrACAM) != "PATCH" || got.Get(hdrACAH) != "X-A, X-B" || got.Get(hdrACAC) != "true" {
		t.Errorf("answer headers %v", got)
	}

	// The same preflight on a stream without the mark and without authz
	// metadata is not answered: only authz's metadata makes it an app.
	r := exchange(t, c, context.Background(), requestHeaders(nil, pre...))[0]
	if r.GetImmediateResponse() != nil {
		t.Error("preflight answered after authz without authz metadata")
	}

	// After ext_authz with passthru metadata: on to the app.
	r = exchange(t, c, context.Background(), requestHeaders(authzMetadata("subdomain", "passthru", alice.String()), pre...))[0]
	if r.GetImmediateResponse() != nil {
		t.Error("passthru preflight answered by the proxy")
	}
	// ... and now remembered: before ext_authz it goes on as well.
	r = exchange(t, c, before, requestHeaders(nil, pre...))[0]
	if r.GetImmediateResponse() != nil {
		t.Error("preflight of a known passthru app answered before authz")
	}
}

func TestProcessLocalRepliesUntouched(t *testing.T) {
	c := serve(t, newTestProcessor(t, nil))
	for _, details := range []string{"ext_authz_denied", "wsedge_cors_preflight", "ext_authz_error"} {
		r := exchange(t, c, context.Background(),
			responseHeaders(nil, details, ":status", "303", "set-cookie", "coder_subdomain_app_session_token_ab=k", "access-control-allow-origin", "x"))[0]
		if r.GetResponseHeaders() == nil || r.GetResponseHeaders().GetResponse() != nil {
			t.Errorf("%s: %v, want an untouched response", details, r)
		}
	}
	// An upstream response without metadata gets path-app treatment.
	r := exchange(t, c, context.Background(), responseHeaders(nil, "via_upstream", ":status", "200", "set-cookie", "coder_session_token=k", "access-control-allow-origin", "x"))[0]
	got := apply(http.Header{"Set-Cookie": {"coder_session_token=k"}, "Access-Control-Allow-Origin": {"x"}}, mutationOf(r.GetResponseHeaders().GetResponse().GetHeaderMutation()))
	if len(got.Values("Set-Cookie")) != 0 || got.Get(hdrACAO) != "" || got.Get(hdrContentTypeOpts) != "nosniff" {
		t.Errorf("upstream response without metadata: %v", got)
	}
}

func TestProcessRefusesBodies(t *testing.T) {
	c := serve(t, newTestProcessor(t, nil))
	s, err := c.Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("body message: %v, want FailedPrecondition (Envoy then fails the request)", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{WildcardHostname: testWildcard}); err != ErrNoOwners {
		t.Errorf("no owners: %v", err)
	}
	if _, err := New(Options{WildcardHostname: "apps.example.com", Owners: &fakeOwners{}}); err == nil {
		t.Error("bad wildcard accepted")
	}
	p, err := New(Options{Owners: &fakeOwners{}})
	if err != nil {
		t.Fatal(err)
	}
	// Without subdomain apps nothing is answered before authz.
	d := p.policy.beforeAuthzRequest(context.Background(), preflight(aliceOrigin, "GET", "", AppInfo{}), p.memory)
	if d.Immediate != nil {
		t.Error("answered without a wildcard")
	}
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
