package tracing

import (
	"errors"
	"testing"
)

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{name: "nothing set", env: nil, want: false},
		{name: "endpoint", env: map[string]string{envEndpoint: "http://collector:4317"}, want: true},
		{name: "traces endpoint", env: map[string]string{envTracesEndpoint: "http://collector:4317"}, want: true},
		{name: "exporter otlp alone (default endpoint)", env: map[string]string{envTracesExporter: "otlp"}, want: true},
		{name: "exporter none wins over endpoint", env: map[string]string{envTracesExporter: "none", envEndpoint: "http://c:4317"}, want: false},
		{name: "sdk disabled wins", env: map[string]string{envSDKDisabled: "TRUE", envTracesExporter: "otlp"}, want: false},
		{name: "sdk disabled false", env: map[string]string{envSDKDisabled: "false", envEndpoint: "http://c:4317"}, want: true},
		{name: "grpc protocol", env: map[string]string{envEndpoint: "http://c:4317", envProtocol: "grpc"}, want: true},
		{name: "traces protocol wins over general", env: map[string]string{envEndpoint: "http://c:4317", envProtocol: "http/protobuf", envTracesProtocol: "grpc"}, want: true},
		{name: "http protocol refused", env: map[string]string{envEndpoint: "http://c:4318", envProtocol: "http/protobuf"}, wantErr: true},
		{name: "other exporter refused", env: map[string]string{envTracesExporter: "zipkin"}, wantErr: true},
		{name: "protocol without endpoint is off", env: map[string]string{envProtocol: "http/protobuf"}, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Enabled(func(k string) string { return tc.env[k] })
			if tc.wantErr {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("Enabled = %v, %v; want ErrUnsupported", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Enabled = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
