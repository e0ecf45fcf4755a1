package authz

import (
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestCheckResponse: what Envoy gets for an allow and a denial — header
// names in lower case and in name order, a repeated header's later values
// appended, every metadata entry a string.
func TestCheckResponse(t *testing.T) {
	opt := func(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: a}
	}
	const (
		overwrite = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		appendTo  = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	)
	allow := Decision{
		Allow: true,
		UpstreamHeader: http.Header{
			"X-Wsedge-App-Token": {"tok"},
			"Cookie":             {"a=1"},
			"X-Unlisted-Name":    {"one", "two"},
		},
		UpstreamRemove: []string{"Cookie", "X-Other"},
		ResponseHeader: http.Header{"Set-Cookie": {"c1=1", "c2=2"}},
		Metadata:       map[string]string{"user_id": "u", "app": "code", "cors_behavior": "simple"},
	}
	want := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				opt("cookie", "a=1", overwrite),
				opt("x-unlisted-name", "one", overwrite),
				opt("x-unlisted-name", "two", appendTo),
				opt("x-wsedge-app-token", "tok", overwrite),
			},
			HeadersToRemove:      []string{"cookie", "x-other"},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{opt("set-cookie", "c1=1", appendTo), opt("set-cookie", "c2=2", appendTo)},
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"user_id":       structpb.NewStringValue("u"),
			"app":           structpb.NewStringValue("code"),
			"cors_behavior": structpb.NewStringValue("simple"),
		}},
	}
	got := checkResponse(allow)
	if !proto.Equal(got, want) {
		t.Errorf("allow:\n%v\nwant\n%v", got, want)
	}
	// What goes on the wire decodes to the same.
	b, err := proto.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var back authv3.CheckResponse
	if err := proto.Unmarshal(b, &back); err != nil || !proto.Equal(&back, want) {
		t.Errorf("allow does not survive the wire: %v %v", err, &back)
	}

	deny := Decision{Status: http.StatusSeeOther, Header: http.Header{"Location": {"/x"}, "Set-Cookie": {"s=1"}}, Body: []byte("see other")}
	want = &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_SeeOther},
			Headers: []*corev3.HeaderValueOption{opt("location", "/x", appendTo), opt("set-cookie", "s=1", appendTo)},
			Body:    "see other",
		}},
	}
	if got := checkResponse(deny); !proto.Equal(got, want) {
		t.Errorf("deny:\n%v\nwant\n%v", got, want)
	}
	if got := checkResponse(Decision{Allow: true}); got.GetDynamicMetadata() != nil || len(got.GetOkResponse().GetHeaders()) != 0 {
		t.Errorf("an allow with nothing to add: %v", got)
	}
}
