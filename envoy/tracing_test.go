package envoy

import (
	"errors"
	"strings"
	"testing"
)

// Tracing is off by default: no tracing block, no collector cluster.
// Turned on, the connection manager traces with the OpenTelemetry tracer
// towards the otlp cluster and spawns upstream spans (the dialer continues
// those).
func TestTracingConfig(t *testing.T) {
	c := DefaultConfig()
	b, err := Bootstrap(c)
	if err != nil {
		t.Fatal(err)
	}
	if hcm := hcmOf(t, c); hcm.GetTracing() != nil {
		t.Fatalf("tracing on by default: %v", hcm.GetTracing())
	}
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() == OTLPCluster {
			t.Fatal("otlp cluster without -otlp-endpoint")
		}
	}

	c.Tracing.OTLPEndpoint = "127.0.0.1:4317"
	c.Tracing.SamplePercent = 25
	b, err = Bootstrap(c)
	if err != nil {
		t.Fatal(err)
	}
	tr := hcmOf(t, c).GetTracing()
	if tr.GetProvider().GetName() != "envoy.tracers.opentelemetry" || !tr.GetSpawnUpstreamSpan().GetValue() || tr.GetRandomSampling().GetValue() != 25 {
		t.Fatalf("tracing block: %v", tr)
	}
	// http.url is replaced by the URL without its query string (the e2e
	// test shows Envoy otherwise exports it).
	if tags := tr.GetCustomTags(); len(tags) != 1 || tags[0].GetTag() != "http.url" || !strings.Contains(tags[0].GetValue(), "%PATH(NQ)%") {
		t.Fatalf("custom tags %v, want http.url without the query", tags)
	}
	found := false
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() == OTLPCluster {
			found = true
			if _, ok := cl.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; !ok {
				t.Fatal("otlp cluster does not speak HTTP/2")
			}
		}
	}
	if !found {
		t.Fatal("no otlp cluster")
	}
}

func TestTracingValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tr    Tracing
		field string
	}{
		{"no port", Tracing{OTLPEndpoint: "collector", SamplePercent: 1, ServiceName: "e"}, "otlp-endpoint"},
		{"url", Tracing{OTLPEndpoint: "http://collector:4317", SamplePercent: 1, ServiceName: "e"}, "otlp-endpoint"},
		{"percent", Tracing{OTLPEndpoint: "collector:4317", SamplePercent: 101, ServiceName: "e"}, "trace-sample-percent"},
		{"name", Tracing{OTLPEndpoint: "collector:4317", SamplePercent: 1}, "trace-service-name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Tracing = tc.tr
			var ce *ConfigError
			if err := c.Validate(); !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("Validate = %v; want an error on %s", err, tc.field)
			}
		})
	}
}
