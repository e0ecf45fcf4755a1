package envoy

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	reqwithoutqueryv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wsedge/wsedge/edgewire"
)

// accessLogFields is one JSON object per request. Paths are logged without
// their query: queries carry smuggled API keys and terminal tokens.
// authz_check_us is how long the ext_authz Check took, in microseconds
// (ext_authz filter state, emit_filter_state_stats; null when no Check was
// made: probes, DERP, requests answered before authz).
var accessLogFields = map[string]any{
	"start_time":      "%START_TIME%",
	"request_id":      "%REQ(X-REQUEST-ID)%",
	"method":          "%REQ(:METHOD)%",
	"authority":       "%REQ(:AUTHORITY)%",
	"path":            "%REQ_WITHOUT_QUERY(:PATH)%",
	"protocol":        "%PROTOCOL%",
	"upgrade":         "%REQ(UPGRADE)%",
	"status":          "%RESPONSE_CODE%",
	"response_flags":  "%RESPONSE_FLAGS%",
	"route":           "%ROUTE_NAME%",
	"upstream_host":   "%UPSTREAM_HOST%",
	"client":          "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
	"user_agent":      "%REQ(USER-AGENT)%",
	"bytes_received":  "%BYTES_RECEIVED%",
	"bytes_sent":      "%BYTES_SENT%",
	"duration_ms":     "%DURATION%",
	"authz":           "%DYNAMIC_METADATA(" + edgewire.MetadataNamespace + ")%",
	"authz_check_us":  "%FILTER_STATE(" + edgewire.ExtAuthzFilter + ":FIELD:latency_us)%",
	"details":         "%RESPONSE_CODE_DETAILS%",
	"upstream_failed": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

func accessLogs(c Config) []*accesslogv3.AccessLog {
	fields, err := structpb.NewStruct(accessLogFields)
	if err != nil {
		panic("envoy: access log fields: " + err.Error()) // static strings only
	}
	format := &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: fields},
		Formatters: []*corev3.TypedExtensionConfig{{
			Name:        "envoy.formatter.req_without_query",
			TypedConfig: typed(&reqwithoutqueryv3.ReqWithoutQuery{}),
		}},
	}
	var cfg *accesslogv3.AccessLog
	if c.AccessLogPath == "" {
		cfg = &accesslogv3.AccessLog{
			Name: "envoy.access_loggers.stdout",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: typed(&streamv3.StdoutAccessLog{
				AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: format},
			})},
		}
	} else {
		cfg = &accesslogv3.AccessLog{
			Name: "envoy.access_loggers.file",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: typed(&filev3.FileAccessLog{
				Path:            c.AccessLogPath,
				AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: format},
			})},
		}
	}
	return []*accesslogv3.AccessLog{cfg}
}
