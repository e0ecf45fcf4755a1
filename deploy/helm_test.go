package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// chartDir is the Helm chart; its ci/ directory holds the values files the
// tests render it with (the convention of Helm's chart-testing).
const chartDir = "helm/wsedge"

// The release the tests render: a release name containing "wsedge" gives
// the objects the names the kustomize manifests use (wsedge-envoy, …), so
// the same checks apply.
const (
	helmRelease   = "wsedge"
	helmNamespace = "wsedge"
)

// helmKubeVersion is the oldest Kubernetes the chart supports (Chart.yaml
// kubeVersion; the preStop sleep action needs 1.30).
const helmKubeVersion = "v1.30.0"

// podMonitor is the part of the Prometheus operator's PodMonitor the chart
// renders; decoding it strictly catches misspelt fields.
type podMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval,omitempty"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// helmRendered is the chart rendered with one values file.
type helmRendered struct {
	rendering
	PodMonitors []podMonitor
	Notes       string
}

// helmValuesFiles are the chart's ci/*-values.yaml files.
func helmValuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"minimal-values.yaml", "ha-tls-values.yaml"} {
		if !slices.Contains(files, filepath.Join(chartDir, "ci", want)) {
			t.Fatalf("%s/ci/%s is missing", chartDir, want)
		}
	}
	return files
}

// helmRenderers render the chart with each values file, for the checks the
// kustomize manifests get.
func helmRenderers(t *testing.T) []renderer {
	var out []renderer
	for _, f := range helmValuesFiles(t) {
		out = append(out, renderer{"helm " + filepath.Base(f), func(t *testing.T) rendering { return helmTemplate(t, f).rendering }})
	}
	return out
}

func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{}
	if err := yaml.Unmarshal(b, &vals); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return vals
}

// helmRender renders the chart with Helm's own SDK as `helm template
// wsedge deploy/helm/wsedge -n wsedge --kube-version 1.30 -f …` does: the
// chart's values.yaml overlaid with vals.
func helmRender(vals map[string]any) (manifest, notes string, err error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return "", "", err
	}
	kv, err := common.ParseKubeVersion(helmKubeVersion)
	if err != nil {
		return "", "", err
	}
	inst := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	inst.DryRunStrategy = action.DryRunClient
	inst.ReleaseName, inst.Namespace, inst.Replace = helmRelease, helmNamespace, true
	inst.KubeVersion = kv
	r, err := inst.Run(chrt, vals)
	if err != nil {
		return "", "", err
	}
	rel, ok := r.(*releasev1.Release)
	if !ok {
		return "", "", fmt.Errorf("helm returned a %T", r)
	}
	return rel.Manifest, rel.Info.Notes, nil
}

// helmLint runs `helm lint --strict` with vals: warnings fail too.
func helmLint(t *testing.T, vals map[string]any) {
	t.Helper()
	kv, err := common.ParseKubeVersion(helmKubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	l := action.NewLint()
	l.Strict, l.Namespace, l.KubeVersion = true, helmNamespace, kv
	res := l.Run([]string{chartDir}, vals)
	for _, m := range res.Messages {
		t.Logf("helm lint: %s", m)
	}
	if res.TotalChartsLinted != 1 || len(res.Errors) > 0 {
		t.Fatalf("helm lint --strict: %d charts linted, errors: %v", res.TotalChartsLinted, res.Errors)
	}
}

// helmTemplate lints and renders the chart with a values file and decodes
// every object strictly: Kubernetes kinds with the API types, PodMonitors
// with podMonitor.
func helmTemplate(t *testing.T, valuesFile string) helmRendered {
	t.Helper()
	vals := readValues(t, valuesFile)
	helmLint(t, vals)
	manifest, notes, err := helmRender(vals)
	if err != nil {
		t.Fatalf("helm template -f %s: %v", valuesFile, err)
	}
	out := helmRendered{rendering: rendering{Name: "helm " + filepath.Base(valuesFile), HelmRelease: true}, Notes: notes}
	r := k8syaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", out.Name, i, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s: document %d: %v", out.Name, i, err)
		}
		if head.APIVersion == "monitoring.coreos.com/v1" && head.Kind == "PodMonitor" {
			var pm podMonitor
			if err := strictYAML(doc, &pm); err != nil {
				t.Fatalf("%s: PodMonitor: %v", out.Name, err)
			}
			out.PodMonitors = append(out.PodMonitors, pm)
			continue
		}
		objs, err := decodeManifests(doc)
		if err != nil {
			t.Fatalf("%s: document %d: %v\n%s", out.Name, i, err, doc)
		}
		out.Objs = append(out.Objs, objs...)
	}
	for _, o := range out.Objs {
		if m, err := metaAccessor(o); err != nil || m.GetNamespace() != "" {
			// Helm puts objects in the release namespace; a namespace in a
			// template would fight --namespace.
			t.Errorf("%s: an object sets its namespace %q (%v)", out.Name, m.GetNamespace(), err)
		}
	}
	if token, ok := vals["proxyToken"].(map[string]any); ok {
		if s, _ := token["existingSecret"].(string); s != "" {
			out.ExternalSecrets = append(out.ExternalSecrets, s)
		}
	}
	return out
}

func metaAccessor(o any) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", o)
	}
	return m, nil
}

// TestHelmChart checks what the shared workload checks (TestKubernetesWorkloads
// renders the chart too) do not: the values reach the objects, required
// values are required, and the existing-secret and PodMonitor options.
func TestHelmChart(t *testing.T) {
	t.Run("minimal", func(t *testing.T) {
		file := filepath.Join(chartDir, "ci", "minimal-values.yaml")
		h := helmTemplate(t, file)
		o := index(t, h.Objs)
		vals := readValues(t, file)
		token := vals["proxyToken"].(map[string]any)["value"].(string)
		s := o.secrets["wsedge-proxy-token"]
		if s == nil || string(s.Data["token"]) != token {
			t.Errorf("the chart does not create the proxy-token Secret from proxyToken.value: %v", s)
		}
		if len(h.PodMonitors) != 0 {
			t.Errorf("a PodMonitor by default: it needs the Prometheus operator's CRD")
		}
		for _, name := range []string{"wsedge-authz", "wsedge-dialer"} {
			env := containerEnv(t, name, o, o.deployments[name].Spec.Template.Spec.Containers[0])
			if _, ok := env["OTEL_EXPORTER_OTLP_ENDPOINT"]; ok {
				t.Errorf("%s: tracing is on by default", name)
			}
		}
		if !strings.Contains(h.Notes, "kubectl -n wsedge get service wsedge-envoy") {
			t.Errorf("NOTES.txt does not say where Envoy's address is:\n%s", h.Notes)
		}
	})

	t.Run("ha-tls", func(t *testing.T) {
		file := filepath.Join(chartDir, "ci", "ha-tls-values.yaml")
		h := helmTemplate(t, file)
		o := index(t, h.Objs)
		o.external = h.ExternalSecrets
		if len(o.secrets) != 0 {
			t.Errorf("with proxyToken.existingSecret the chart still renders %d Secrets", len(o.secrets))
		}
		for _, name := range []string{"wsedge-authz", "wsedge-dialer"} {
			c := o.deployments[name].Spec.Template.Spec.Containers[0]
			var ref *corev1.SecretKeySelector
			for _, e := range c.Env {
				if e.Name == "WSEDGE_PROXY_TOKEN" && e.ValueFrom != nil {
					ref = e.ValueFrom.SecretKeyRef
				}
			}
			if ref == nil || ref.Name != "wsedge-eu-proxy-token" || ref.Key != "token" {
				t.Errorf("%s: the token does not come from the existing Secret: %+v", name, ref)
			}
			env := containerEnv(t, name, o, c)
			if env["OTEL_EXPORTER_OTLP_ENDPOINT"] != "http://otel-collector.observability:4317" {
				t.Errorf("%s: tracing endpoint %q", name, env["OTEL_EXPORTER_OTLP_ENDPOINT"])
			}
			if imageName := c.Image; imageName != "registry.example.com/wsedge:v0.1.0" {
				t.Errorf("%s: image %q", name, imageName)
			}
		}
		if r := o.deployments["wsedge-dialer"].Spec.Replicas; r == nil || *r != 4 {
			t.Errorf("dialer replicas %v, want the values' 4", r)
		}
		if h := o.hpas[0]; *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 20 {
			t.Errorf("authz autoscaling %d–%d, want the values' 3–20", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		boot, _ := envoyBootstrap(t, o, o.deployments["wsedge-envoy"])
		for _, want := range [][]string{
			{"--rate-limit", "600"}, {"--rate-limit-burst", "200"}, {"--rate-limit-interval", "1m"}, {"--rate-limit-before-authz"},
			{"--authz-timeout", "3s"}, {"--upgrade-idle-timeout", "2h"}, {"--xff-num-trusted-hops", "1"},
			{"--access-url-host", "eu.proxy.example.com"}, {"--wildcard-hostname", "*--eu.example.com"},
		} {
			i := slices.Index(boot.Args, want[0])
			if i < 0 || len(want) == 2 && (i+1 >= len(boot.Args) || boot.Args[i+1] != want[1]) {
				t.Errorf("envoy-config arguments %q lack %q", boot.Args, want)
			}
		}
		if len(h.PodMonitors) != 1 {
			t.Fatalf("%d PodMonitors, want 1", len(h.PodMonitors))
		}
		pm := h.PodMonitors[0]
		if pm.APIVersion != "monitoring.coreos.com/v1" || pm.Metadata.Labels["release"] != "kube-prometheus-stack" {
			t.Errorf("PodMonitor %s: apiVersion %s labels %v", pm.Metadata.Name, pm.APIVersion, pm.Metadata.Labels)
		}
		// Every pod is scraped on the port its annotations name, through
		// an endpoint of the PodMonitor.
		sel, err := metaSelector(&pm.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		for name, d := range o.deployments {
			if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("the PodMonitor does not select %s", name)
				continue
			}
			c := d.Spec.Template.Spec.Containers[0]
			ann := d.Spec.Template.Annotations
			if !slices.ContainsFunc(pm.Spec.PodMetricsEndpoints, func(e struct {
				Port     string `json:"port"`
				Path     string `json:"path"`
				Interval string `json:"interval,omitempty"`
			}) bool {
				p, ok := containerPort(c, e.Port, 0)
				return ok && fmt.Sprint(p) == ann["prometheus.io/port"] && e.Path == ann["prometheus.io/path"]
			}) {
				t.Errorf("the PodMonitor has no endpoint for %s's metrics (%s%s)", name, ann["prometheus.io/port"], ann["prometheus.io/path"])
			}
		}
		// The policy admits Prometheus from the namespace the values name.
		for _, np := range o.netpols {
			last := np.Spec.Ingress[len(np.Spec.Ingress)-1]
			if ns := last.From[0].NamespaceSelector; ns == nil || ns.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
				t.Errorf("NetworkPolicy %s: Prometheus namespace selector %v", np.Name, ns)
			}
		}
	})

	// Values without a default fail the install with a message that says
	// what to set, as helm install shows it.
	base := readValues(t, filepath.Join(chartDir, "ci", "minimal-values.yaml"))
	for _, tt := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"no token", func(v map[string]any) { delete(v, "proxyToken") }, "proxyToken.value (the token coder wsproxy create prints) or proxyToken.existingSecret is required"},
		{"no primary", func(v map[string]any) { delete(v, "coder") }, "coder.primaryURL is required"},
		{"no access URL", func(v map[string]any) { delete(v, "accessURL") }, "accessURL is required"},
		{"plain-http primary", func(v map[string]any) { v["coder"] = map[string]any{"primaryURL": "http://coder.example.com"} }, `coder.primaryURL "http://coder.example.com" must be an https URL`},
		{"tracing without endpoint", func(v map[string]any) { v["tracing"] = map[string]any{"enabled": true} }, "tracing.otlpEndpoint is required when tracing is enabled"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vals, err := cloneValues(base)
			if err != nil {
				t.Fatal(err)
			}
			tt.edit(vals)
			_, _, err = helmRender(vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("rendered without complaint or with another one: %v; want %q", err, tt.want)
			}
		})
	}
}

// cloneValues deep-copies a values map.
func cloneValues(v map[string]any) (map[string]any, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	return out, yaml.Unmarshal(b, &out)
}

// TestHelmChartFiles: the chart's values.yaml documents every top-level
// key (a comment right above it), and no template is left unused.
func TestHelmChartFiles(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	n := 0
	for i, line := range lines {
		if line == "" || line[0] == ' ' || line[0] == '#' || !strings.Contains(line, ":") {
			continue
		}
		n++
		if i == 0 || !strings.HasPrefix(lines[i-1], "#") {
			t.Errorf("values.yaml: top-level key %q has no comment above it", strings.TrimSpace(line))
		}
	}
	if n < 10 {
		t.Fatalf("values.yaml: only %d top-level keys found", n)
	}
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"coder wsproxy create", "helm install", "envoy-config"} {
		if !bytes.Contains(readme, []byte(want)) {
			t.Errorf("the chart's README.md does not mention %q", want)
		}
	}
}
