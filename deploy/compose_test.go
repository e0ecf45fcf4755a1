package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const composeDir = "compose"

// composeFile is the part of the Compose specification compose.yaml uses;
// decoding strictly into it catches misspelt keys. A new key needs a field
// here.
type composeFile struct {
	Name           string                    `json:"name"`
	XWsedge        json.RawMessage           `json:"x-wsedge"`
	XWsedgeSetting json.RawMessage           `json:"x-wsedge-settings"`
	XDialer        json.RawMessage           `json:"x-dialer"`
	Services       map[string]composeService `json:"services"`
}

type composeService struct {
	Image           string                      `json:"image"`
	Build           *composeBuild               `json:"build,omitempty"`
	Command         []string                    `json:"command,omitempty"`
	User            string                      `json:"user"`
	ReadOnly        bool                        `json:"read_only"`
	CapDrop         []string                    `json:"cap_drop"`
	SecurityOpt     []string                    `json:"security_opt"`
	Restart         string                      `json:"restart"`
	StopGracePeriod string                      `json:"stop_grace_period,omitempty"`
	EnvFile         []composeEnvFile            `json:"env_file,omitempty"`
	Environment     map[string]string           `json:"environment,omitempty"`
	Healthcheck     *composeHealthcheck         `json:"healthcheck"`
	Tmpfs           []string                    `json:"tmpfs,omitempty"`
	Ports           []string                    `json:"ports,omitempty"`
	Volumes         []string                    `json:"volumes,omitempty"`
	DependsOn       map[string]composeDependsOn `json:"depends_on,omitempty"`
	Networks        map[string]composeNetwork   `json:"networks,omitempty"`
}

type composeBuild struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile"`
}

type composeEnvFile struct {
	Path     string `json:"path"`
	Required bool   `json:"required"`
}

type composeHealthcheck struct {
	Test        []string `json:"test"`
	Interval    string   `json:"interval"`
	Timeout     string   `json:"timeout"`
	Retries     int      `json:"retries"`
	StartPeriod string   `json:"start_period"`
}

type composeDependsOn struct {
	Condition string `json:"condition"`
}

type composeNetwork struct {
	Aliases []string `json:"aliases"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := strictYAML(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

func TestComposeStrictDecodingRejectsMistakes(t *testing.T) {
	good := "services:\n  a:\n    image: x\n    read_only: true\n"
	var c composeFile
	if err := strictYAML([]byte(good), &c); err != nil || !c.Services["a"].ReadOnly {
		t.Fatalf("good file: %v %+v", err, c)
	}
	for name, bad := range map[string]string{
		"misspelt key":  strings.Replace(good, "read_only", "readonly", 1),
		"wrong case":    strings.Replace(good, "image", "Image", 1),
		"duplicate key": good + "    image: y\n",
	} {
		if err := strictYAML([]byte(bad), &composeFile{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// composeUID is the numeric uid of a compose user "uid:gid".
func composeUID(t *testing.T, name, user string) int {
	t.Helper()
	uid, _, _ := strings.Cut(user, ":")
	n, err := strconv.Atoi(uid)
	if err != nil {
		t.Errorf("%s: user %q is not a numeric uid:gid", name, user)
	}
	return n
}

// dockerfileUser is the USER of the Dockerfile's final stage.
func dockerfileUser(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^USER (\S+)$`).FindAllStringSubmatch(string(b), -1)
	if len(m) == 0 {
		t.Fatal("Dockerfile has no USER")
	}
	return m[len(m)-1][1]
}

func TestCompose(t *testing.T) {
	c := readCompose(t)
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"envoy", "wsedge-authz", "wsedge-dialer-1", "wsedge-dialer-2"}; !slices.Equal(names, want) {
		t.Fatalf("services %q, want %q", names, want)
	}
	imageUser := dockerfileUser(t)
	for name, s := range c.Services {
		if uid := composeUID(t, name, s.User); uid == 0 {
			t.Errorf("%s runs as root", name)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: want read_only, cap_drop [ALL] and no-new-privileges", name)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD" {
			t.Errorf("%s: no CMD healthcheck", name)
		}
		if s.Restart == "" {
			t.Errorf("%s: no restart policy", name)
		}
		if strings.HasPrefix(name, "wsedge-") {
			if s.User != imageUser {
				t.Errorf("%s: user %q, the image's USER is %q", name, s.User, imageUser)
			}
			if s.Build == nil {
				t.Errorf("%s: no build section", name)
			} else if _, err := os.Stat(filepath.Join(composeDir, s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", name, err)
			}
			checkComposeSecrets(t, name, s)
		}
	}

	envoyCfg := checkComposeEnvoy(t, c.Services["envoy"]).Config
	for name, s := range c.Services {
		if strings.HasPrefix(name, "wsedge-") {
			for _, err := range settingsDisagree(envoyCfg, s.Environment) {
				t.Errorf("%s and envoy.yaml: %v", name, err)
			}
		}
	}
	authz := c.Services["wsedge-authz"]
	authzPort := checkComposeWsedge(t, "wsedge-authz", authz, "authz")
	if want := []string{"CMD", "/wsedge-probe", fmt.Sprintf("grpc://127.0.0.1:%d", authzPort)}; authz.Healthcheck != nil && !slices.Equal(authz.Healthcheck.Test, want) {
		t.Errorf("wsedge-authz: healthcheck %q, want %q", authz.Healthcheck.Test, want)
	}
	if host, port := listenPort(t, "envoy --authz-addr", envoyCfg.AuthzAddr); host != "wsedge-authz" || port != authzPort {
		t.Errorf("Envoy sends ext_authz to %s, authz is wsedge-authz:%d", envoyCfg.AuthzAddr, authzPort)
	}

	// The fast path's JWKS: served by authz where Envoy fetches it, never
	// published (it holds the token signing secrets).
	if envoyCfg.FastPath {
		_, jwksPort := listenPort(t, "wsedge-authz WSEDGE_JWKS_LISTEN", authz.Environment["WSEDGE_JWKS_LISTEN"])
		if host, port := listenPort(t, "envoy --authz-jwks-addr", envoyCfg.AuthzJWKSAddr); host != "wsedge-authz" || port != jwksPort {
			t.Errorf("Envoy fetches the JWKS from %s, authz serves it on wsedge-authz:%d", envoyCfg.AuthzJWKSAddr, jwksPort)
		}
		if len(authz.Ports) != 0 {
			t.Errorf("wsedge-authz publishes ports %q: its JWKS must stay inside", authz.Ports)
		}
	}

	dialerHost, dialerPort := listenPort(t, "envoy --dialer-addr", envoyCfg.DialerAddr)
	relays := map[string]bool{}
	for _, name := range []string{"wsedge-dialer-1", "wsedge-dialer-2"} {
		s := c.Services[name]
		port := checkComposeWsedge(t, name, s, "dialer")
		if want := []string{"CMD", "/wsedge-probe", fmt.Sprintf("http://127.0.0.1:%d/healthz", port)}; s.Healthcheck != nil && !slices.Equal(s.Healthcheck.Test, want) {
			t.Errorf("%s: healthcheck %q, want %q", name, s.Healthcheck.Test, want)
		}
		// Envoy resolves the shared alias to every dialer; siblings reach
		// each other by service name for the DERP mesh.
		if !slices.Contains(s.Networks["default"].Aliases, dialerHost) || port != dialerPort {
			t.Errorf("%s: not reachable as Envoy's dialer %s", name, envoyCfg.DialerAddr)
		}
		if s.Environment["WSEDGE_AUTHZ_ADDR"] != envoyCfg.AuthzAddr {
			t.Errorf("%s: WSEDGE_AUTHZ_ADDR %q is not Envoy's authz %s", name, s.Environment["WSEDGE_AUTHZ_ADDR"], envoyCfg.AuthzAddr)
		}
		relay := s.Environment["WSEDGE_RELAY_ADDRESS"]
		if want := fmt.Sprintf("http://%s:%d", name, port); relay != want {
			t.Errorf("%s: relay address %q, want %q", name, relay, want)
		}
		relays[relay] = true
	}
	if len(relays) != 2 {
		t.Error("the dialers share a relay address; they could not mesh")
	}
	for dep, cond := range c.Services["envoy"].DependsOn {
		if _, ok := c.Services[dep]; !ok || cond.Condition == "" {
			t.Errorf("envoy depends on %q (%q)", dep, cond.Condition)
		}
	}
}

// checkComposeWsedge checks a wsedge service's command and listeners and
// returns the port it serves on.
func checkComposeWsedge(t *testing.T, name string, s composeService, subcommand string) int32 {
	t.Helper()
	if len(s.Command) == 0 || s.Command[0] != subcommand {
		t.Errorf("%s: command %q, want %q", name, s.Command, subcommand)
	}
	host, port := listenPort(t, name+" WSEDGE_LISTEN", s.Environment["WSEDGE_LISTEN"])
	if host != "0.0.0.0" {
		t.Errorf("%s: listens on %q, unreachable for Envoy", name, s.Environment["WSEDGE_LISTEN"])
	}
	if mhost, _ := listenPort(t, name+" WSEDGE_METRICS_LISTEN", s.Environment["WSEDGE_METRICS_LISTEN"]); mhost != "0.0.0.0" {
		t.Errorf("%s: metrics on %q cannot be scraped", name, s.Environment["WSEDGE_METRICS_LISTEN"])
	}
	for _, k := range []string{"WSEDGE_PRIMARY_URL", "WSEDGE_ACCESS_URL"} {
		if !strings.HasPrefix(s.Environment[k], "https://") {
			t.Errorf("%s: %s = %q, want an https URL", name, k, s.Environment[k])
		}
	}
	// Compose kills the container stop_grace_period after SIGTERM.
	grace, err1 := time.ParseDuration(s.Environment["WSEDGE_SHUTDOWN_GRACE"])
	stop, err2 := time.ParseDuration(s.StopGracePeriod)
	if err1 != nil || err2 != nil || stop <= grace {
		t.Errorf("%s: stop_grace_period %q must exceed WSEDGE_SHUTDOWN_GRACE %q", name, s.StopGracePeriod, s.Environment["WSEDGE_SHUTDOWN_GRACE"])
	}
	return port
}

// composeEnvFileKeys are the variables an env file's checked-in example sets.
func composeEnvFileKeys(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir, exampleOf(p)))
	if err != nil {
		t.Fatalf("env file %s has no checked-in example: %v", p, err)
	}
	var keys []string
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=value", exampleOf(p), line)
		}
		keys = append(keys, k)
	}
	return keys
}

// checkComposeSecrets: the proxy token comes from a required, git-ignored
// env file, never from compose.yaml itself.
func checkComposeSecrets(t *testing.T, name string, s composeService) {
	t.Helper()
	if _, ok := s.Environment["WSEDGE_PROXY_TOKEN"]; ok {
		t.Errorf("%s: the proxy token is written in compose.yaml", name)
	}
	ignore, _ := os.ReadFile(filepath.Join(composeDir, ".gitignore"))
	var token bool
	for _, f := range s.EnvFile {
		if !f.Required {
			t.Errorf("%s: env file %s is optional: a missing token would go unnoticed", name, f.Path)
		}
		if !slices.Contains(strings.Split(string(ignore), "\n"), f.Path) {
			t.Errorf("%s: env file %s is not git-ignored", name, f.Path)
		}
		token = token || slices.Contains(composeEnvFileKeys(t, f.Path), "WSEDGE_PROXY_TOKEN")
	}
	if !token {
		t.Errorf("%s: no env file provides WSEDGE_PROXY_TOKEN", name)
	}
}

// checkComposeEnvoy checks the Envoy service against the bootstrap it mounts
// and returns that bootstrap's configuration.
func checkComposeEnvoy(t *testing.T, s composeService) envoyConfigFile {
	t.Helper()
	if !strings.HasPrefix(s.Image, "envoyproxy/envoy:v1.40.") {
		t.Errorf("envoy: image %q is not Envoy 1.40", s.Image)
	}
	i := slices.Index(s.Command, "-c")
	if i < 0 || i+1 >= len(s.Command) {
		t.Fatalf("envoy: no -c <bootstrap> in %q", s.Command)
	}
	var boot *envoyConfigFile
	var tlsDir string
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) != 3 || parts[2] != "ro" {
			t.Errorf("envoy: volume %q is not host:container:ro", v)
			continue
		}
		if parts[1] == s.Command[i+1] {
			for _, f := range findEnvoyConfigs(t) {
				if filepath.Clean(f.Path) == filepath.Join(composeDir, parts[0]) {
					boot = &f
				}
			}
		} else {
			tlsDir = parts[1]
		}
	}
	if boot == nil {
		t.Fatalf("envoy: %s is not mounted from a checked-in bootstrap", s.Command[i+1])
	}
	cfg := boot.Config
	if cfg.TLSCertFile == "" || filepath.Dir(cfg.TLSCertFile) != tlsDir || filepath.Dir(cfg.TLSKeyFile) != tlsDir {
		t.Errorf("envoy: TLS files %q %q are not in the mounted %q", cfg.TLSCertFile, cfg.TLSKeyFile, tlsDir)
	}
	// The host's 443 goes to the TLS listener and its 80 to the listener
	// that only redirects to https (both, and nothing else, when the
	// bootstrap has one).
	want := []string{fmt.Sprintf("443:%d", cfg.ListenAddr.Port())}
	if cfg.RedirectListenAddr.IsValid() {
		want = append(want, fmt.Sprintf("80:%d", cfg.RedirectListenAddr.Port()))
	}
	if !slices.Equal(s.Ports, want) {
		t.Errorf("envoy: ports %q, want %q", s.Ports, want)
	}
	// The healthcheck runs inside the container, so the admin endpoint
	// stays on loopback.
	if !cfg.AdminAddr.Addr().IsLoopback() {
		t.Errorf("envoy: admin on %s, want loopback", cfg.AdminAddr)
	}
	if s.Healthcheck != nil {
		hc := strings.Join(s.Healthcheck.Test, " ")
		// TestComposeEnvoyHealthcheck runs it against the real Envoy.
		if want := fmt.Sprintf("/dev/tcp/127.0.0.1/%d", cfg.AdminAddr.Port()); !strings.Contains(hc, want) || !strings.Contains(hc, "GET /ready") {
			t.Errorf("envoy: healthcheck %q does not ask the admin endpoint's /ready", hc)
		}
	}
	if composeUID(t, "envoy", s.User) != 101 {
		t.Errorf("envoy: user %q, want the image's envoy user 101", s.User)
	}
	return *boot
}

// composeFlagUses are the wsedge flags compose.yaml sets.
func composeFlagUses(t *testing.T) []flagUse {
	t.Helper()
	c := readCompose(t)
	var uses []flagUse
	for name, s := range c.Services {
		if !strings.HasPrefix(name, "wsedge-") || len(s.Command) == 0 {
			continue
		}
		u := flagUse{Where: "compose.yaml service " + name, Cmd: s.Command[0], Flags: argFlags(s.Command[1:])}
		for k := range s.Environment {
			u.Envs = append(u.Envs, k)
		}
		for _, f := range s.EnvFile {
			u.Envs = append(u.Envs, composeEnvFileKeys(t, f.Path)...)
		}
		u.Envs = slices.DeleteFunc(u.Envs, func(k string) bool { return !strings.HasPrefix(k, "WSEDGE_") })
		uses = append(uses, u)
	}
	for _, f := range findEnvoyConfigs(t) {
		if strings.HasPrefix(f.Path, composeDir+"/") {
			uses = append(uses, flagUse{Where: f.Path, Cmd: "envoy-config", Flags: argFlags(f.Args)})
		}
	}
	return uses
}

// TestWsedgeFlags: every flag and WSEDGE_ variable that compose.yaml, the
// Kubernetes manifests and the Helm chart set exists for the wsedge subcommand they run.
// Subcommands this build does not have yet are skipped by name.
func TestWsedgeFlags(t *testing.T) {
	uses := composeFlagUses(t)
	uses = append(uses, kubernetesFlagUses(t, baseFromFiles(t))...)
	if _, err := exec.LookPath("kubectl"); err == nil {
		uses = append(uses, kubernetesFlagUses(t, kustomizeBuild(t, filepath.Join(kubeDir, "overlays", "example")))...)
	}
	for _, hr := range helmRenderers(t) {
		uses = append(uses, kubernetesFlagUses(t, hr.Render(t))...)
	}
	var cmds []string
	for _, u := range uses {
		if !slices.Contains(cmds, u.Cmd) {
			cmds = append(cmds, u.Cmd)
		}
	}
	slices.Sort(cmds)
	if want := []string{"authz", "dialer", "envoy-config"}; !slices.Equal(cmds, want) {
		t.Fatalf("manifests run wsedge %q, want %q", cmds, want)
	}
	checkFlagUses(t, uses)
}
