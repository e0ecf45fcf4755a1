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

// The requests the access log records (Config.AccessLog, --access-log).
const (
	// AccessLogErrors, the default, records responses with a status of
	// 400 or more and those Envoy flagged (upstream failures, timeouts,
	// overload, rate limits, resets: any %RESPONSE_FLAGS%). It is what
	// Coder's own proxy logs at its default level (it logs successes at
	// debug, 4xx and 5xx as warnings), and it spares the edge a line per
	// warm request: a JSON line costs Envoy about 6 % of its work on one
	// (make bench-envoy), which is what kept the warm path from a plain
	// proxy's CPU and req/s behind a minimal Envoy (make bench-reference).
	// Envoy's stats and the services' metrics count every request anyway.
	AccessLogErrors = "errors"
	// AccessLogAll records every request.
	AccessLogAll = "all"
	// AccessLogOff records nothing (the Envoy stats and the services'
	// metrics still count every request).
	AccessLogOff = "off"
)

// errorsMinStatusRuntimeKey lets an operator move the errors filter's
// threshold at run time (Envoy runtime), e.g. to 500.
const errorsMinStatusRuntimeKey = "wsedge.access_log.errors_min_status"

func accessLogs(c Config) []*accesslogv3.AccessLog {
	mode := c.AccessLog
	if mode == "" {
		mode = AccessLogErrors
	}
	if mode == AccessLogOff {
		return nil
	}
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
	if mode == AccessLogErrors {
		cfg.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
			Filters: []*accesslogv3.AccessLogFilter{
				{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
					Comparison: &accesslogv3.ComparisonFilter{
						Op:    accesslogv3.ComparisonFilter_GE,
						Value: &corev3.RuntimeUInt32{DefaultValue: 400, RuntimeKey: errorsMinStatusRuntimeKey},
					},
				}}},
				// No flags listed: any response flag matches.
				{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{}}},
			},
		}}}
	}
	return []*accesslogv3.AccessLog{cfg}
}
