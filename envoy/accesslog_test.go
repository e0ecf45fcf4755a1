package envoy

import (
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
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

// TestAccessLogModes: "all" logs every request to stdout (or the file),
// "errors" logs only status ≥ 400 or a response flag, through Envoy's own
// access log filters, and "off" configures no access log at all.
func TestAccessLogModes(t *testing.T) {
	c := DefaultConfig()
	c.AccessLog = AccessLogAll
	logs := hcmOf(t, c).GetAccessLog()
	if len(logs) != 1 {
		t.Fatalf("all: %d access logs, want one", len(logs))
	}
	if f := logs[0].GetFilter(); f != nil {
		t.Fatalf("all: filter %v, want none", f)
	}

	// The default, and the zero value, log errors only.
	for _, mode := range []string{DefaultConfig().AccessLog, ""} {
		c := DefaultConfig()
		c.AccessLog = mode
		logs := hcmOf(t, c).GetAccessLog()
		if len(logs) != 1 || len(logs[0].GetFilter().GetOrFilter().GetFilters()) != 2 {
			t.Fatalf("mode %q: access logs %v, want one with the errors filter", mode, logs)
		}
	}

	c = DefaultConfig()
	c.AccessLog = AccessLogOff
	if logs := hcmOf(t, c).GetAccessLog(); len(logs) != 0 {
		t.Fatalf("off: %d access logs", len(logs))
	}

	c = DefaultConfig()
	c.AccessLog, c.AccessLogPath = AccessLogErrors, "/var/log/envoy/errors.json"
	logs = hcmOf(t, c).GetAccessLog()
	if len(logs) != 1 {
		t.Fatalf("errors: %d access logs", len(logs))
	}
	var file filev3.FileAccessLog
	if err := logs[0].GetTypedConfig().UnmarshalTo(&file); err != nil {
		t.Fatalf("errors to a file: %v", err)
	}
	if file.GetPath() != c.AccessLogPath {
		t.Fatalf("errors: path %q", file.GetPath())
	}
	or := logs[0].GetFilter().GetOrFilter().GetFilters()
	if len(or) != 2 {
		t.Fatalf("errors: filter %v, want status or flags", logs[0].GetFilter())
	}
	cmp := or[0].GetStatusCodeFilter().GetComparison()
	if cmp.GetOp() != accesslogv3.ComparisonFilter_GE || cmp.GetValue().GetDefaultValue() != 400 {
		t.Fatalf("errors: status filter %v, want ≥ 400", cmp)
	}
	if rf := or[1].GetResponseFlagFilter(); rf == nil || len(rf.GetFlags()) != 0 {
		t.Fatalf("errors: flag filter %v, want any flag", or[1])
	}
}
