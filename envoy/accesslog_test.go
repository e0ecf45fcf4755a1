package envoy

import (
	"testing"

	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
)

// TestAccessLogCarriesTheRequestIDAuthzAndTheDialerLog: Envoy generates
// x-request-id for every request from outside (a client's own is not
// kept), logs it, and hands the same header to authz and the dialer, whose
// log lines carry it as request_id.
func TestAccessLogCarriesTheRequestIDAuthzAndTheDialerLog(t *testing.T) {
	m := hcmOf(t, DefaultConfig())
	if m.GetGenerateRequestId() != nil && !m.GetGenerateRequestId().GetValue() {
		t.Fatal("generate_request_id is off: authz and the dialer would see no x-request-id")
	}
	if m.GetPreserveExternalRequestId() {
		t.Fatal("preserve_external_request_id is on: clients would choose the id the logs correlate on")
	}
	logs := m.GetAccessLog()
	if len(logs) != 1 {
		t.Fatalf("%d access logs", len(logs))
	}
	var out streamv3.StdoutAccessLog
	if err := logs[0].GetTypedConfig().UnmarshalTo(&out); err != nil {
		t.Fatal(err)
	}
	got := out.GetLogFormat().GetJsonFormat().GetFields()["request_id"].GetStringValue()
	if got != "%REQ(X-REQUEST-ID)%" {
		t.Fatalf("access log request_id = %q, want %%REQ(X-REQUEST-ID)%%", got)
	}
}
