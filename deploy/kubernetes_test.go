package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/testutil"
)

const kubeDir = "kubernetes"

// externalSecrets are Secrets the operator creates outside the manifests
// (see deploy/README.md); everything else a pod refers to must be defined.
var externalSecrets = []string{"wsedge-tls"}

// k8sDecoder decodes the kinds the manifests use, strictly: an unknown or
// misspelt field (field names are case-sensitive) or a duplicated field is
// an error, as it is for `kubectl apply --validate=strict`.
var k8sDecoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme,
		policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		utilruntime.Must(add(s))
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// decodeManifests decodes every YAML document of b (documents holding only
// comments are skipped).
func decodeManifests(b []byte) ([]runtime.Object, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var probe any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if probe == nil {
			continue
		}
		obj, _, err := k8sDecoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, obj)
	}
}

// strictYAML decodes YAML into v, failing on unknown fields (case-sensitive)
// and duplicated keys.
func strictYAML(b []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func TestStrictDecodingRejectsMistakes(t *testing.T) {
	good := `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i
          ports: [{containerPort: 80}]
`
	if _, err := decodeManifests([]byte(good)); err != nil {
		t.Fatalf("good manifest refused: %v", err)
	}
	for name, bad := range map[string]string{
		"misspelt field":   strings.Replace(good, "containers:", "contianers:", 1),
		"wrong case":       strings.Replace(good, "containerPort", "containerport", 1),
		"duplicated field": strings.Replace(good, "image: i", "image: i\n          image: j", 1),
		"unknown kind":     strings.Replace(good, "kind: Deployment", "kind: Deploymnet", 1),
		"wrong type":       strings.Replace(good, "containerPort: 80", "containerPort: eighty", 1),
	} {
		if _, err := decodeManifests([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// kustomization is the part of kustomize's Kustomization the manifests use;
// decoding it strictly catches misspelt kustomize fields.
type kustomization struct {
	APIVersion         string          `json:"apiVersion"`
	Kind               string          `json:"kind"`
	Namespace          string          `json:"namespace,omitempty"`
	Labels             []kustomizeLbl  `json:"labels,omitempty"`
	Resources          []string        `json:"resources,omitempty"`
	Images             []kustomizeImg  `json:"images,omitempty"`
	ConfigMapGenerator []generator     `json:"configMapGenerator,omitempty"`
	SecretGenerator    []generator     `json:"secretGenerator,omitempty"`
	Replicas           []kustomizeRepl `json:"replicas,omitempty"`
	Patches            []kustomizePtch `json:"patches,omitempty"`
}

type kustomizeLbl struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	IncludeTemplates bool              `json:"includeTemplates,omitempty"`
}

type kustomizeImg struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

type kustomizeRepl struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

type kustomizePtch struct {
	Path  string `json:"path,omitempty"`
	Patch string `json:"patch,omitempty"`
}

type generator struct {
	Name     string   `json:"name"`
	Behavior string   `json:"behavior,omitempty"`
	Type     string   `json:"type,omitempty"`
	Literals []string `json:"literals,omitempty"`
	Files    []string `json:"files,omitempty"`
	Envs     []string `json:"envs,omitempty"`
}

// kustomizationDirs are the directories under deploy/kubernetes holding a
// kustomization.yaml.
func kustomizationDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(kubeDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kubernetes/base", "kubernetes/overlays/example"} {
		if !slices.Contains(dirs, filepath.FromSlash(want)) {
			t.Fatalf("%s/kustomization.yaml is missing", want)
		}
	}
	return dirs
}

func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := strictYAML(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// generatorFile is the file of a generator's files entry ("key=path" or "path").
func generatorFile(entry string) string {
	if _, p, ok := strings.Cut(entry, "="); ok {
		return p
	}
	return entry
}

// exampleOf is the checked-in stand-in of a git-ignored secret file.
func exampleOf(p string) string { return p + ".example" }

// TestKustomizations: each kustomization.yaml decodes strictly, names files
// that exist (a git-ignored secret env file must have a checked-in .example
// and be git-ignored), and every YAML file beside it is used by it.
func TestKustomizations(t *testing.T) {
	for _, dir := range kustomizationDirs(t) {
		t.Run(filepath.ToSlash(dir), func(t *testing.T) {
			k := readKustomization(t, dir)
			if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
				t.Errorf("apiVersion/kind = %s/%s", k.APIVersion, k.Kind)
			}
			used := map[string]bool{"kustomization.yaml": true}
			mustExist := func(what, p string) {
				full := filepath.Join(dir, p)
				fi, err := os.Stat(full)
				if err != nil {
					t.Errorf("%s %q: %v", what, p, err)
					return
				}
				if fi.IsDir() {
					if _, err := os.Stat(filepath.Join(full, "kustomization.yaml")); err != nil {
						t.Errorf("%s %q is a directory without kustomization.yaml", what, p)
					}
				}
				used[filepath.Clean(p)] = true
			}
			for _, r := range k.Resources {
				mustExist("resource", r)
			}
			for _, p := range k.Patches {
				if p.Path != "" {
					mustExist("patch", p.Path)
				}
			}
			for _, g := range slices.Concat(k.ConfigMapGenerator, k.SecretGenerator) {
				for _, f := range g.Files {
					mustExist("generator "+g.Name+" file", generatorFile(f))
				}
			}
			for _, g := range k.ConfigMapGenerator {
				for _, e := range g.Envs {
					mustExist("configMapGenerator "+g.Name+" env file", e)
				}
			}
			for _, g := range k.SecretGenerator {
				for _, e := range g.Envs {
					// The real file holds the secret and stays out of git.
					mustExist("secretGenerator "+g.Name+" example env file", exampleOf(e))
					ignore, err := os.ReadFile(filepath.Join(dir, ".gitignore"))
					if err != nil || !slices.Contains(strings.Split(string(ignore), "\n"), e) {
						t.Errorf("secretGenerator %s: %s is not listed in %s/.gitignore", g.Name, e, dir)
					}
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if !e.IsDir() && strings.HasSuffix(e.Name(), ".yaml") && !used[e.Name()] {
					t.Errorf("%s is not used by %s/kustomization.yaml", e.Name(), dir)
				}
			}
		})
	}
}

// TestManifestsDecodeStrictly decodes every manifest and patch under
// deploy/kubernetes with the Kubernetes API types.
func TestManifestsDecodeStrictly(t *testing.T) {
	n := 0
	for _, dir := range kustomizationDirs(t) {
		k := readKustomization(t, dir)
		var files []string
		for _, r := range k.Resources {
			if fi, err := os.Stat(filepath.Join(dir, r)); err == nil && !fi.IsDir() {
				files = append(files, r)
			}
		}
		for _, p := range k.Patches {
			if p.Path != "" {
				files = append(files, p.Path)
			}
		}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := decodeManifests(b)
			if err != nil {
				t.Errorf("%s/%s: %v", filepath.ToSlash(dir), f, err)
			}
			if len(objs) == 0 && err == nil {
				t.Errorf("%s/%s: no objects", filepath.ToSlash(dir), f)
			}
			n += len(objs)
		}
	}
	if n < 15 {
		t.Fatalf("decoded only %d objects", n)
	}
}

// rendering is one set of objects to check: the base read file by file, a
// kustomization built by kubectl kustomize, or the Helm chart rendered with
// a values file.
type rendering struct {
	Name string
	Objs []runtime.Object
	// HelmRelease: rendered by Helm, which leaves the Namespace to
	// `helm install --create-namespace`.
	HelmRelease bool
	// ExternalSecrets are Secrets the operator creates besides
	// externalSecrets (an existingSecret value).
	ExternalSecrets []string
}

// baseFromFiles assembles the base the way kustomize would, minus name
// hashes and the namespace: its resources plus its generated ConfigMaps.
func baseFromFiles(t *testing.T) rendering {
	t.Helper()
	dir := filepath.Join(kubeDir, "base")
	k := readKustomization(t, dir)
	var objs []runtime.Object
	for _, r := range k.Resources {
		b, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeManifests(b)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		objs = append(objs, o...)
	}
	for _, g := range k.ConfigMapGenerator {
		cm := &corev1.ConfigMap{Data: map[string]string{}}
		cm.Name = g.Name
		for _, l := range g.Literals {
			key, v, _ := strings.Cut(l, "=")
			cm.Data[key] = v
		}
		for _, f := range g.Files {
			key, p, ok := strings.Cut(f, "=")
			if !ok {
				key, p = path.Base(f), f
			}
			b, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			cm.Data[key] = string(b)
		}
		objs = append(objs, cm)
	}
	if len(k.SecretGenerator) > 0 {
		t.Fatal("base has a secretGenerator: teach baseFromFiles about it")
	}
	return rendering{Name: "base (files)", Objs: objs}
}

// kustomizeBuild renders dir with `kubectl kustomize` in a copy of
// deploy/kubernetes in which every git-ignored secret env file is its
// checked-in example.
func kustomizeBuild(t *testing.T, dir string) rendering {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not on PATH: kustomize builds are not checked")
	}
	tmp := t.TempDir()
	if err := os.CopyFS(tmp, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	for _, d := range kustomizationDirs(t) {
		for _, g := range readKustomization(t, d).SecretGenerator {
			for _, e := range g.Envs {
				b, err := os.ReadFile(filepath.Join(d, exampleOf(e)))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(tmp, d, e), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(tmp, dir)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	objs, err := decodeManifests(out)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: output: %v", dir, err)
	}
	return rendering{Name: filepath.ToSlash(dir) + " (kubectl kustomize)", Objs: objs}
}

// renderer produces one rendering.
type renderer struct {
	Name   string
	Render func(*testing.T) rendering
}

// renderings are the base from its files and, with kubectl, every
// kustomization built.
func renderings(t *testing.T) []renderer {
	out := []renderer{{"base files", baseFromFiles}}
	for _, d := range kustomizationDirs(t) {
		out = append(out, renderer{"kustomize " + filepath.ToSlash(d), func(t *testing.T) rendering { return kustomizeBuild(t, d) }})
	}
	return append(out, helmRenderers(t)...)
}

// objects indexes a rendering by kind and name.
type objects struct {
	deployments  map[string]*appsv1.Deployment
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	accounts     map[string]*corev1.ServiceAccount
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	pdbs         []*policyv1.PodDisruptionBudget
	namespaces   []*corev1.Namespace
	netpols      []*networkingv1.NetworkPolicy
	namespaceSet map[string]bool // namespaces of namespaced objects
	external     []string        // Secrets created outside the rendering
}

// secretExists: the rendering defines the Secret, or the operator creates it.
func (o objects) secretExists(name string) bool {
	return o.secrets[name] != nil || slices.Contains(externalSecrets, name) || slices.Contains(o.external, name)
}

func index(t *testing.T, objs []runtime.Object) objects {
	t.Helper()
	o := objects{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		accounts: map[string]*corev1.ServiceAccount{}, namespaceSet: map[string]bool{},
	}
	for _, obj := range objs {
		switch v := obj.(type) {
		case *appsv1.Deployment:
			o.deployments[v.Name] = v
			o.namespaceSet[v.Namespace] = true
		case *corev1.Service:
			o.services[v.Name] = v
			o.namespaceSet[v.Namespace] = true
		case *corev1.ConfigMap:
			o.configMaps[v.Name] = v
			o.namespaceSet[v.Namespace] = true
		case *corev1.Secret:
			o.secrets[v.Name] = v
			o.namespaceSet[v.Namespace] = true
		case *corev1.ServiceAccount:
			o.accounts[v.Name] = v
			o.namespaceSet[v.Namespace] = true
		case *autoscalingv2.HorizontalPodAutoscaler:
			o.hpas = append(o.hpas, v)
			o.namespaceSet[v.Namespace] = true
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, v)
			o.namespaceSet[v.Namespace] = true
		case *networkingv1.NetworkPolicy:
			o.netpols = append(o.netpols, v)
			o.namespaceSet[v.Namespace] = true
		case *corev1.Namespace:
			o.namespaces = append(o.namespaces, v)
		default:
			t.Fatalf("unexpected object %T", obj)
		}
	}
	return o
}

// workloadsFor are the Deployments whose pods a selector picks.
func (o objects) workloadsFor(sel labels.Selector) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, d := range o.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

// containerPort resolves a probe or Service port (number or name) in c.
func containerPort(c corev1.Container, name string, number int32) (int32, bool) {
	for _, p := range c.Ports {
		if (name != "" && p.Name == name) || (name == "" && p.ContainerPort == number) {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// probePort is the port a probe checks, resolved against c's ports.
func probePort(t *testing.T, where string, c corev1.Container, p *corev1.Probe) int32 {
	t.Helper()
	var name string
	var num int32
	switch {
	case p.HTTPGet != nil:
		name, num = p.HTTPGet.Port.StrVal, p.HTTPGet.Port.IntVal
	case p.TCPSocket != nil:
		name, num = p.TCPSocket.Port.StrVal, p.TCPSocket.Port.IntVal
	case p.GRPC != nil:
		num = p.GRPC.Port
	default:
		t.Errorf("%s: probe has no http, tcp or grpc check", where)
		return 0
	}
	port, ok := containerPort(c, name, num)
	if !ok {
		t.Errorf("%s: probe port %q/%d is not a port of the container", where, name, num)
	}
	return port
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv is the environment a container sees: envFrom ConfigMaps, then
// env (which wins), and the names in the order they are defined.
func containerEnv(t *testing.T, where string, o objects, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := o.configMaps[from.ConfigMapRef.Name]
			if cm == nil {
				t.Errorf("%s: envFrom ConfigMap %q does not exist", where, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				env[k] = v
			}
		default:
			t.Errorf("%s: only envFrom ConfigMaps are expected", where)
		}
	}
	for _, e := range c.Env {
		// Kubernetes expands $(VAR) only for variables defined earlier.
		for _, m := range envRef.FindAllStringSubmatch(e.Value, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("%s: %s refers to $(%s), which is not defined before it", where, e.Name, m[1])
			}
		}
		v := envRef.ReplaceAllStringFunc(e.Value, func(s string) string { return env[envRef.FindStringSubmatch(s)[1]] })
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				s := o.secrets[ref.Name]
				if !o.secretExists(ref.Name) {
					t.Errorf("%s: %s: Secret %q does not exist", where, e.Name, ref.Name)
				} else if s == nil {
					// Created by the operator: its keys are not known here.
				} else if _, ok := s.Data[ref.Key]; !ok {
					if _, ok := s.StringData[ref.Key]; !ok {
						t.Errorf("%s: %s: Secret %q has no key %q", where, e.Name, ref.Name, ref.Key)
					}
				}
				v = "<secret>"
			case e.ValueFrom.FieldRef != nil:
				v = "<" + e.ValueFrom.FieldRef.FieldPath + ">"
			}
		}
		env[e.Name] = v
	}
	return env
}

// listenPort is the port of a host:port setting.
func listenPort(t *testing.T, where, hostport string) (host string, port int32) {
	t.Helper()
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("%s: %q: %v", where, hostport, err)
		return "", 0
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Errorf("%s: %q: %v", where, hostport, err)
	}
	return h, int32(n)
}

// imageName is an image reference without registry path, tag or digest.
func imageName(image string) string {
	image, _, _ = strings.Cut(image, "@")
	base := path.Base(image)
	name, _, _ := strings.Cut(base, ":")
	return name
}

// TestKubernetesWorkloads checks what a misconfiguration would break at run
// time: security settings, probes on the ports actually served, references
// between objects, the Envoy bootstrap agreeing with the Services it sends
// to, and the Envoy bootstrap in the ConfigMap validating with real Envoy.
func TestKubernetesWorkloads(t *testing.T) {
	for _, rr := range renderings(t) {
		t.Run(rr.Name, func(t *testing.T) { checkRendering(t, rr.Render(t)) })
	}
}

func checkRendering(t *testing.T, r rendering) {
	o := index(t, r.Objs)
	o.external = r.ExternalSecrets
	for _, name := range []string{"wsedge-envoy", "wsedge-authz", "wsedge-dialer"} {
		if o.deployments[name] == nil || o.services[name] == nil || o.accounts[name] == nil {
			t.Fatalf("%s: Deployment, Service or ServiceAccount missing", name)
		}
	}
	if r.HelmRelease {
		if len(o.namespaces) != 0 {
			t.Errorf("the chart renders %d Namespaces: the release's namespace belongs to helm install", len(o.namespaces))
		}
	} else if len(o.namespaces) != 1 {
		t.Errorf("%d Namespaces, want 1", len(o.namespaces))
	} else if strings.HasSuffix(r.Name, "(kubectl kustomize)") {
		want := o.namespaces[0].Name
		for ns := range o.namespaceSet {
			if ns != want {
				t.Errorf("an object is in namespace %q, not %q", ns, want)
			}
		}
	}
	if len(o.netpols) != 3 {
		t.Errorf("%d NetworkPolicies, want one per component", len(o.netpols))
	}

	for _, d := range o.deployments {
		checkPodSpec(t, o, d)
	}
	boot := checkEnvoy(t, o)
	if c := o.deployments["wsedge-dialer"].Spec.Template.Spec.Containers[0]; containerEnv(t, "wsedge-dialer", o, c)["WSEDGE_AUTHZ_ADDR"] != boot.Config.AuthzAddr {
		t.Errorf("wsedge-dialer: WSEDGE_AUTHZ_ADDR is not Envoy's authz %s: /healthz-report would not check the authz Envoy uses", boot.Config.AuthzAddr)
	}
	for _, name := range []string{"wsedge-authz", "wsedge-dialer"} {
		c := o.deployments[name].Spec.Template.Spec.Containers[0]
		for _, err := range settingsDisagree(boot.Config, containerEnv(t, name, o, c)) {
			t.Errorf("%s and %s: %v", name, boot.Path, err)
		}
	}
	checkAuthz(t, o)
	checkJWKS(t, o, boot.Config)
	checkDialer(t, o)

	for _, s := range o.services {
		ws := o.workloadsFor(labels.SelectorFromSet(s.Spec.Selector))
		if len(ws) != 1 {
			t.Errorf("Service %s selects %d Deployments, want 1", s.Name, len(ws))
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := containerPort(ws[0].Spec.Template.Spec.Containers[0], p.TargetPort.StrVal, p.TargetPort.IntVal); !ok {
				t.Errorf("Service %s port %s: target %s is not a port of %s", s.Name, p.Name, p.TargetPort.String(), ws[0].Name)
			}
		}
	}
	for _, p := range o.pdbs {
		sel, err := metaSelector(p.Spec.Selector)
		if err != nil || len(o.workloadsFor(sel)) != 1 {
			t.Errorf("PodDisruptionBudget %s selects no single Deployment (%v)", p.Name, err)
		}
	}
	if len(o.pdbs) != 3 {
		t.Errorf("%d PodDisruptionBudgets, want one per component", len(o.pdbs))
	}
}

func checkPodSpec(t *testing.T, o objects, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	where := "Deployment " + d.Name
	sel, err := metaSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: selector does not match its pod labels (%v)", where, err)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false", where)
	}
	if sa := o.accounts[spec.ServiceAccountName]; sa == nil {
		t.Errorf("%s: ServiceAccount %q does not exist", where, spec.ServiceAccountName)
	} else if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount %s: automountServiceAccountToken is not false", sa.Name)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: pod does not run as a non-root uid", where)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: no RuntimeDefault seccomp profile", where)
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			if o.configMaps[v.ConfigMap.Name] == nil {
				t.Errorf("%s: volume %s: ConfigMap %q does not exist", where, v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if !o.secretExists(v.Secret.SecretName) {
				t.Errorf("%s: volume %s: Secret %q does not exist", where, v.Name, v.Secret.SecretName)
			}
		}
	}
	if len(spec.Containers) != 1 {
		t.Errorf("%s: %d containers, want 1", where, len(spec.Containers))
	}
	// The only init container there may be writes Envoy's bootstrap.
	for _, c := range spec.InitContainers {
		if imageName(c.Image) != "wsedge" || len(c.Args) == 0 || c.Args[0] != "envoy-config" {
			t.Errorf("%s: init container %s is not wsedge envoy-config", where, c.Name)
		}
	}
	for i, c := range slices.Concat(spec.Containers, spec.InitContainers) {
		init := i >= len(spec.Containers)
		cw := where + " container " + c.Name
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s: no securityContext", cw)
		default:
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", cw)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: root filesystem is not read-only", cw)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities: want drop ALL, add none", cw)
			}
			if sc.Privileged != nil && *sc.Privileged || sc.RunAsUser != nil && *sc.RunAsUser == 0 {
				t.Errorf("%s: privileged or root", cw)
			}
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[res]; !ok {
				t.Errorf("%s: no %s request", cw, res)
			}
			if _, ok := c.Resources.Limits[res]; !ok {
				t.Errorf("%s: no %s limit", cw, res)
			}
		}
		if init {
			continue
		}
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			t.Errorf("%s: readiness and liveness probes are required", cw)
		}
		ann := d.Spec.Template.Annotations
		if ann["prometheus.io/scrape"] != "true" {
			t.Errorf("%s: not marked for Prometheus scraping", where)
		} else if n, err := strconv.Atoi(ann["prometheus.io/port"]); err != nil {
			t.Errorf("%s: prometheus.io/port %q", where, ann["prometheus.io/port"])
		} else if _, ok := containerPort(c, "", int32(n)); !ok {
			t.Errorf("%s: prometheus.io/port %d is not a container port", where, n)
		}
	}
}

// wsedgeContainer returns the Deployment's container and its environment,
// checking it runs the wsedge image with the given subcommand.
func wsedgeContainer(t *testing.T, o objects, name, subcommand string) (corev1.Container, map[string]string) {
	t.Helper()
	c := o.deployments[name].Spec.Template.Spec.Containers[0]
	if imageName(c.Image) != "wsedge" {
		t.Errorf("%s: image %q is not wsedge", name, c.Image)
	}
	if len(c.Command) != 0 || len(c.Args) == 0 || c.Args[0] != subcommand {
		t.Errorf("%s: command %q args %q, want the image's entrypoint with %q", name, c.Command, c.Args, subcommand)
	}
	return c, containerEnv(t, name, o, c)
}

// checkServes: the process listens on all interfaces (the kubelet and
// Envoy come from outside the pod) on the port the probes and the Service
// use, and serves metrics on the annotated port.
func checkServes(t *testing.T, o objects, name string, c corev1.Container, env map[string]string, readiness func(*corev1.Probe) bool) {
	t.Helper()
	host, port := listenPort(t, name+" WSEDGE_LISTEN", env["WSEDGE_LISTEN"])
	if host != "0.0.0.0" && host != "::" {
		t.Errorf("%s: WSEDGE_LISTEN %q is not reachable from outside the pod", name, env["WSEDGE_LISTEN"])
	}
	for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil {
			continue
		}
		if got := probePort(t, name+" "+what, c, p); got != port {
			t.Errorf("%s: %s probe on port %d, but it listens on %d", name, what, got, port)
		}
		if what == "readiness" && !readiness(p) {
			t.Errorf("%s: readiness probe is not the expected kind of check: %+v", name, p.ProbeHandler)
		}
	}
	mhost, mport := listenPort(t, name+" WSEDGE_METRICS_LISTEN", env["WSEDGE_METRICS_LISTEN"])
	if mhost != "0.0.0.0" && mhost != "::" {
		t.Errorf("%s: metrics on %q cannot be scraped", name, env["WSEDGE_METRICS_LISTEN"])
	}
	if ann := o.deployments[name].Spec.Template.Annotations["prometheus.io/port"]; ann != strconv.Itoa(int(mport)) {
		t.Errorf("%s: prometheus.io/port %q, metrics on %d", name, ann, mport)
	}
	svc := o.services[name]
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s is not headless: Envoy's STRICT_DNS cluster would see one address", name)
	}
	if len(svc.Spec.Ports) != 1 {
		t.Errorf("Service %s: %d ports, want 1", name, len(svc.Spec.Ports))
	} else if got, _ := containerPort(c, svc.Spec.Ports[0].TargetPort.StrVal, svc.Spec.Ports[0].TargetPort.IntVal); got != port {
		t.Errorf("Service %s targets port %d, the process listens on %d", name, got, port)
	}
	// SIGTERM comes after preStop; the pod is killed terminationGracePeriod
	// after the start of preStop, which must leave room for the shutdown
	// grace.
	grace, err := time.ParseDuration(env["WSEDGE_SHUTDOWN_GRACE"])
	if err != nil {
		t.Errorf("%s: WSEDGE_SHUTDOWN_GRACE %q: %v", name, env["WSEDGE_SHUTDOWN_GRACE"], err)
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if tg := o.deployments[name].Spec.Template.Spec.TerminationGracePeriodSeconds; tg == nil || preStop+grace >= time.Duration(*tg)*time.Second {
		t.Errorf("%s: preStop %s + shutdown grace %s do not fit in terminationGracePeriodSeconds %v", name, preStop, grace, tg)
	}
	if env["WSEDGE_PROXY_TOKEN"] != "<secret>" {
		t.Errorf("%s: WSEDGE_PROXY_TOKEN does not come from a Secret", name)
	}
	for _, k := range []string{"WSEDGE_PRIMARY_URL", "WSEDGE_ACCESS_URL"} {
		if !strings.HasPrefix(env[k], "https://") {
			t.Errorf("%s: %s = %q, want an https URL", name, k, env[k])
		}
	}
}

func checkAuthz(t *testing.T, o objects) {
	c, env := wsedgeContainer(t, o, "wsedge-authz", "authz")
	checkServes(t, o, "wsedge-authz", c, env, func(p *corev1.Probe) bool { return p.GRPC != nil })
	d := o.deployments["wsedge-authz"]
	if d.Spec.Replicas != nil {
		t.Errorf("wsedge-authz sets replicas: every apply would reset what the HorizontalPodAutoscaler chose")
	}
	var found bool
	for _, h := range o.hpas {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == d.Name && h.Spec.ScaleTargetRef.APIVersion == "apps/v1" {
			found = true
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
				t.Errorf("HorizontalPodAutoscaler %s: min %v max %d", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
			}
			if len(h.Spec.Metrics) == 0 || h.Spec.Metrics[0].Resource == nil || h.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
				t.Errorf("HorizontalPodAutoscaler %s does not scale on CPU", h.Name)
			}
		}
	}
	if !found || len(o.hpas) != 1 {
		t.Errorf("want exactly one HorizontalPodAutoscaler, for wsedge-authz (found %v, %d in all)", found, len(o.hpas))
	}
}

func checkDialer(t *testing.T, o objects) {
	c, env := wsedgeContainer(t, o, "wsedge-dialer", "dialer")
	checkServes(t, o, "wsedge-dialer", c, env, func(p *corev1.Probe) bool {
		return p.HTTPGet != nil && p.HTTPGet.Path == "/healthz"
	})
	// Each replica's relay address is its own pod IP and serving port, so
	// siblings can mesh DERP pod to pod.
	_, port := listenPort(t, "wsedge-dialer WSEDGE_LISTEN", env["WSEDGE_LISTEN"])
	if want := fmt.Sprintf("http://<status.podIP>:%d", port); env["WSEDGE_RELAY_ADDRESS"] != want {
		t.Errorf("wsedge-dialer: relay address %q, want %q", env["WSEDGE_RELAY_ADDRESS"], want)
	}
	if r := o.deployments["wsedge-dialer"].Spec.Replicas; r == nil || *r < 2 {
		t.Errorf("wsedge-dialer: want at least 2 replicas, got %v", r)
	}
}

// envoyBootstrap finds the bootstrap Envoy is started with (-c) in the
// ConfigMap mounted there and parses the command on its first line.
func envoyBootstrap(t *testing.T, o objects, d *appsv1.Deployment) (envoyConfigFile, string) {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	i := slices.Index(c.Args, "-c")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("%s: no -c <bootstrap> argument: %q", d.Name, c.Args)
	}
	file := c.Args[i+1]
	for _, m := range c.VolumeMounts {
		if path.Dir(file) != m.MountPath {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				return initContainerBootstrap(t, d, m.Name, file), file
			}
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm := o.configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("%s: ConfigMap %q does not exist", d.Name, v.ConfigMap.Name)
			}
			body, ok := cm.Data[path.Base(file)]
			if !ok {
				t.Fatalf("%s: ConfigMap %s has no key %q", d.Name, cm.Name, path.Base(file))
			}
			line, _, _ := strings.Cut(body, "\n")
			if !strings.HasPrefix(line, commandPrefix) {
				t.Fatalf("ConfigMap %s: %s does not start with its envoy-config command", cm.Name, path.Base(file))
			}
			args, err := splitArgs(strings.TrimPrefix(line, commandPrefix))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := parseEnvoyConfigArgs(args)
			if err != nil {
				t.Fatalf("ConfigMap %s: %v", cm.Name, err)
			}
			return envoyConfigFile{Path: "ConfigMap " + cm.Name, Args: args, Config: cfg, Body: []byte(body)}, file
		}
	}
	t.Fatalf("%s: %s is not in a mounted ConfigMap", d.Name, file)
	return envoyConfigFile{}, ""
}

// initContainerBootstrap is the bootstrap an init container of d writes
// into the emptyDir volume with `wsedge envoy-config --output file`: what
// package envoy generates from the init container's arguments.
func initContainerBootstrap(t *testing.T, d *appsv1.Deployment, volume, file string) envoyConfigFile {
	t.Helper()
	for _, ic := range d.Spec.Template.Spec.InitContainers {
		mounted := slices.ContainsFunc(ic.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == volume && m.MountPath == path.Dir(file) && !m.ReadOnly
		})
		if !mounted || len(ic.Args) == 0 || ic.Args[0] != "envoy-config" {
			continue
		}
		args := slices.Clone(ic.Args[1:])
		j := slices.Index(args, "--output")
		if j < 0 || j+1 >= len(args) || args[j+1] != file {
			t.Fatalf("%s: init container %s does not write %s (--output): %q", d.Name, ic.Name, file, ic.Args)
		}
		args = slices.Delete(args, j, j+2)
		cfg, err := parseEnvoyConfigArgs(args)
		if err != nil {
			t.Fatalf("%s: init container %s: %v", d.Name, ic.Name, err)
		}
		body, err := envoy.YAML(cfg)
		if err != nil {
			t.Fatalf("%s: init container %s: envoy-config refuses its arguments: %v", d.Name, ic.Name, err)
		}
		return envoyConfigFile{Path: "init container " + ic.Name + " of " + d.Name, Args: args, Config: cfg, Body: body, Rendered: true}
	}
	t.Fatalf("%s: %s is in an emptyDir no envoy-config init container writes", d.Name, file)
	return envoyConfigFile{}
}

func checkEnvoy(t *testing.T, o objects) envoyConfigFile {
	d := o.deployments["wsedge-envoy"]
	c := d.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, "envoyproxy/envoy:v1.40.") && !strings.HasPrefix(c.Image, "envoyproxy/envoy:distroless-v1.40.") {
		t.Errorf("wsedge-envoy: image %q is not Envoy 1.40", c.Image)
	}
	boot, _ := envoyBootstrap(t, o, d)
	cfg := boot.Config

	// The bootstrap must be current and acceptable to the real Envoy (one
	// rendered at pod start is current by construction).
	if !boot.Rendered {
		want, err := generatedEnvoyConfig(boot)
		if err != nil {
			t.Fatalf("%s: %v", boot.Path, err)
		}
		if !bytes.Equal(want, boot.Body) {
			t.Errorf("%s: stale bootstrap: run go test ./deploy -run TestEnvoyConfigs -update", boot.Path)
		}
	}
	body := boot.Body
	if cfg.TLSCertFile == "" {
		t.Errorf("%s: Envoy does not terminate TLS", boot.Path)
	} else {
		// TLS files come from a mounted Secret.
		mounted := false
		for _, m := range c.VolumeMounts {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil && path.Dir(cfg.TLSCertFile) == m.MountPath && path.Dir(cfg.TLSKeyFile) == m.MountPath {
					mounted = true
				}
			}
		}
		if !mounted {
			t.Errorf("wsedge-envoy: %s and %s are not in a mounted Secret", cfg.TLSCertFile, cfg.TLSKeyFile)
		}
		certFile, keyFile := testutil.SelfSignedCert(t, "proxy.example.com")
		body = bytes.ReplaceAll(body, []byte(cfg.TLSCertFile), []byte(certFile))
		body = bytes.ReplaceAll(body, []byte(cfg.TLSKeyFile), []byte(keyFile))
	}
	if out, err := testutil.ValidateEnvoyConfig(t, body); err != nil {
		t.Errorf("%s: real Envoy refuses it: %v\n%s", boot.Path, err, out)
	}

	// The kubelet reaches /ready on the admin port at the pod IP.
	if !cfg.AdminAddr.Addr().IsUnspecified() {
		t.Errorf("wsedge-envoy: admin on %s is unreachable for the kubelet's readiness probe", cfg.AdminAddr)
	}
	rp := c.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/ready" {
		t.Errorf("wsedge-envoy: readiness is not GET /ready")
	} else if got := probePort(t, "wsedge-envoy readiness", c, rp); got != int32(cfg.AdminAddr.Port()) {
		t.Errorf("wsedge-envoy: readiness on port %d, admin on %d", got, cfg.AdminAddr.Port())
	}
	if c.LivenessProbe != nil {
		if got := probePort(t, "wsedge-envoy liveness", c, c.LivenessProbe); got != int32(cfg.AdminAddr.Port()) {
			t.Errorf("wsedge-envoy: liveness on port %d, admin on %d", got, cfg.AdminAddr.Port())
		}
	}
	if ann := d.Spec.Template.Annotations; ann["prometheus.io/port"] != strconv.Itoa(int(cfg.AdminAddr.Port())) || ann["prometheus.io/path"] != "/stats/prometheus" {
		t.Errorf("wsedge-envoy: Prometheus annotations %v do not point at the admin /stats/prometheus", ann)
	}

	// The LoadBalancer sends 443 to the edge listener and 80 to the
	// listener that redirects to https, when the bootstrap has one.
	svc := o.services["wsedge-envoy"]
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("Service wsedge-envoy is %s, want LoadBalancer", svc.Spec.Type)
	}
	var has443, has80 bool
	for _, p := range svc.Spec.Ports {
		got, _ := containerPort(c, p.TargetPort.StrVal, p.TargetPort.IntVal)
		switch p.Port {
		case 443:
			has443 = true
			if got != int32(cfg.ListenAddr.Port()) {
				t.Errorf("Service wsedge-envoy: 443 goes to %d, Envoy listens on %d", got, cfg.ListenAddr.Port())
			}
		case 80:
			has80 = true
			if !cfg.RedirectListenAddr.IsValid() || got != int32(cfg.RedirectListenAddr.Port()) {
				t.Errorf("Service wsedge-envoy: 80 goes to %d, Envoy's redirect listener is %v", got, cfg.RedirectListenAddr)
			}
		default:
			t.Errorf("Service wsedge-envoy: unexpected port %d", p.Port)
		}
	}
	if !has443 {
		t.Error("Service wsedge-envoy has no port 443")
	}
	if cfg.RedirectListenAddr.IsValid() && !has80 {
		t.Errorf("Service wsedge-envoy has no port 80 for the redirect listener %v", cfg.RedirectListenAddr)
	}

	// Envoy's clusters resolve to the authz and dialer Services, on the
	// ports those processes serve.
	for _, up := range []struct{ addr, svc string }{{cfg.AuthzAddr, "wsedge-authz"}, {cfg.DialerAddr, "wsedge-dialer"}} {
		host, port := listenPort(t, "envoy upstream", up.addr)
		s := o.services[host]
		if host != up.svc || s == nil {
			t.Errorf("Envoy sends to %q, want the Service %s", up.addr, up.svc)
			continue
		}
		if len(s.Spec.Ports) == 0 || s.Spec.Ports[0].Port != port {
			t.Errorf("Envoy sends to %s, Service %s has ports %v", up.addr, s.Name, s.Spec.Ports)
		}
	}
	return boot
}

// metaSelector is a Deployment's or PodDisruptionBudget's label selector.
func metaSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return nil, errors.New("no selector")
	}
	return metav1.LabelSelectorAsSelector(s)
}

// kubernetesFlagUses are the wsedge flags a rendering sets: the arguments
// and WSEDGE_ variables of the wsedge containers (init containers
// included), and the envoy-config command of each Envoy bootstrap in a
// ConfigMap.
func kubernetesFlagUses(t *testing.T, r rendering) []flagUse {
	t.Helper()
	o := index(t, r.Objs)
	o.external = r.ExternalSecrets
	var uses []flagUse
	for _, d := range o.deployments {
		for _, ic := range d.Spec.Template.Spec.InitContainers {
			if imageName(ic.Image) == "wsedge" && len(ic.Args) > 0 {
				uses = append(uses, flagUse{Where: r.Name + " Deployment " + d.Name + " init container " + ic.Name, Cmd: ic.Args[0], Flags: argFlags(ic.Args[1:])})
			}
		}
		c := d.Spec.Template.Spec.Containers[0]
		if imageName(c.Image) != "wsedge" || len(c.Args) == 0 {
			continue
		}
		u := flagUse{Where: r.Name + " Deployment " + d.Name, Cmd: c.Args[0], Flags: argFlags(c.Args[1:])}
		for k := range containerEnv(t, d.Name, o, c) {
			if strings.HasPrefix(k, "WSEDGE_") {
				u.Envs = append(u.Envs, k)
			}
		}
		slices.Sort(u.Envs)
		uses = append(uses, u)
	}
	for _, cm := range o.configMaps {
		for key, body := range cm.Data {
			if line, _, _ := strings.Cut(body, "\n"); strings.HasPrefix(line, commandPrefix) {
				args, err := splitArgs(strings.TrimPrefix(line, commandPrefix))
				if err != nil {
					t.Fatal(err)
				}
				uses = append(uses, flagUse{Where: r.Name + " ConfigMap " + cm.Name + " " + key, Cmd: "envoy-config", Flags: argFlags(args)})
			}
		}
	}
	return uses
}

// checkJWKS checks the fast path's JWKS: Envoy fetches it from the authz
// Service on the port authz serves it on, and the NetworkPolicy lets only
// Envoy reach that port (it holds the token signing secrets).
func checkJWKS(t *testing.T, o objects, cfg envoy.Config) {
	t.Helper()
	if !cfg.FastPath {
		return
	}
	host, port := listenPort(t, "envoy --authz-jwks-addr", cfg.AuthzJWKSAddr)
	s := o.services[host]
	if host != "wsedge-authz" || s == nil {
		t.Errorf("Envoy fetches the JWKS from %q, want the Service wsedge-authz", cfg.AuthzJWKSAddr)
		return
	}
	c := o.deployments["wsedge-authz"].Spec.Template.Spec.Containers[0]
	_, listen := listenPort(t, "wsedge-authz WSEDGE_JWKS_LISTEN", containerEnv(t, "wsedge-authz", o, c)["WSEDGE_JWKS_LISTEN"])
	// The Service is headless: its name resolves to the pods, and Envoy
	// connects to the port it names there.
	if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(o.deployments["wsedge-authz"].Spec.Template.Labels)) || s.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service wsedge-authz does not resolve to the authz pods")
	}
	if port != listen {
		t.Errorf("Envoy fetches the JWKS on port %d, authz serves it on %d", port, listen)
	}
	var portName string
	for _, p := range c.Ports {
		if p.ContainerPort == listen {
			portName = p.Name
		}
	}
	if portName == "" {
		t.Errorf("authz's JWKS port %d is not a named container port", listen)
	}
	found := false
	for _, np := range o.netpols {
		if np.Name != "wsedge-authz" {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			opens := len(rule.Ports) == 0
			for _, p := range rule.Ports {
				if p.Port == nil || p.Port.StrVal == portName || p.Port.IntVal == listen {
					opens = true
				}
			}
			if !opens {
				continue
			}
			found = true
			if len(rule.From) == 0 {
				t.Errorf("NetworkPolicy wsedge-authz opens the JWKS port to everyone")
			}
			for _, peer := range rule.From {
				// Only Envoy's pods: the selector picks them and no other
				// workload of the deployment, and no namespace or address
				// block widens it.
				onlyEnvoy := peer.NamespaceSelector == nil && peer.IPBlock == nil && peer.PodSelector != nil && len(peer.PodSelector.MatchExpressions) == 0
				if onlyEnvoy {
					sel := labels.SelectorFromSet(peer.PodSelector.MatchLabels)
					for name, d := range o.deployments {
						if sel.Matches(labels.Set(d.Spec.Template.Labels)) != (name == "wsedge-envoy") {
							onlyEnvoy = false
						}
					}
				}
				if !onlyEnvoy {
					t.Errorf("NetworkPolicy wsedge-authz lets %v reach the JWKS; only Envoy may", peer)
				}
			}
		}
	}
	if !found {
		t.Error("NetworkPolicy wsedge-authz does not let Envoy fetch the JWKS")
	}
}
