package deploy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsedge/wsedge/cmd/wsedge/envoyflags"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the checked-in Envoy bootstraps from the command on their first line")

// commandPrefix starts the first line of every checked-in Envoy bootstrap
// under deploy/; the rest of the line is the command's arguments.
const commandPrefix = "# command: wsedge envoy-config "

// regenerateHint is the second line of every checked-in bootstrap.
const regenerateHint = "# Edit the command above, then regenerate this file: go test ./deploy -run TestEnvoyConfigs -update\n"

// wantEnvoyConfigs are the bootstraps the compose file and the kustomizations
// mount; the test fails if one goes missing.
var wantEnvoyConfigs = []string{
	"compose/envoy.yaml",
	"kubernetes/base/envoy-config.yaml",
	"kubernetes/overlays/example/envoy-config.yaml",
}

// envoyConfigFile is one checked-in bootstrap and the command it came from.
type envoyConfigFile struct {
	Path   string // relative to deploy/
	Args   []string
	Config envoy.Config
	Body   []byte // the whole file
	// Rendered: written at pod start by `wsedge envoy-config` (an init
	// container), not checked in; Body is what it writes.
	Rendered bool
}

// findEnvoyConfigs returns every YAML file under deploy/ whose first line is
// an envoy-config command.
func findEnvoyConfigs(t *testing.T) []envoyConfigFile {
	t.Helper()
	var out []envoyConfigFile
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(b, []byte(commandPrefix)) {
			return nil
		}
		line, _, _ := strings.Cut(string(b), "\n")
		args, err := splitArgs(strings.TrimPrefix(line, commandPrefix))
		if err != nil {
			return fmt.Errorf("%s: first line: %w", path, err)
		}
		cfg, err := parseEnvoyConfigArgs(args)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, envoyConfigFile{Path: filepath.ToSlash(path), Args: args, Config: cfg, Body: b})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// parseEnvoyConfigArgs parses arguments exactly as `wsedge envoy-config`
// does (envoyflags.Register on envoy.DefaultConfig).
func parseEnvoyConfigArgs(args []string) (envoy.Config, error) {
	cfg := envoy.DefaultConfig()
	fs := flag.NewFlagSet("wsedge envoy-config", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	envoyflags.Register(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, fmt.Errorf("envoy-config arguments: %w", err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("envoy-config arguments: unexpected %q", fs.Args())
	}
	return cfg, nil
}

// generatedEnvoyConfig is the file content the command line stands for.
func generatedEnvoyConfig(f envoyConfigFile) ([]byte, error) {
	y, err := envoy.YAML(f.Config)
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(f.Body), "\n")
	return append([]byte(line+"\n"+regenerateHint), y...), nil
}

// splitArgs splits a command line on blanks, honouring '…' and "…" quoting
// (no escapes), which is all the checked-in command lines need.
func splitArgs(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}

func TestSplitArgs(t *testing.T) {
	got, err := splitArgs(`--a 1  --wildcard-hostname '*.apps.example.com' --b="x y" ''`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--a", "1", "--wildcard-hostname", "*.apps.example.com", "--b=x y", ""}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := splitArgs(`--a 'open`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
}

// TestEnvoyConfigs: every checked-in bootstrap is exactly what its command
// line generates (run with -update to rewrite them) and the real Envoy
// accepts it.
func TestEnvoyConfigs(t *testing.T) {
	files := findEnvoyConfigs(t)
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	for _, want := range wantEnvoyConfigs {
		if !slices.Contains(paths, want) {
			t.Errorf("%s: missing, or its first line is not %q…", want, commandPrefix)
		}
	}
	certFile, keyFile := testutil.SelfSignedCert(t, "proxy.example.com", "*.apps.example.com")
	for _, f := range files {
		t.Run(f.Path, func(t *testing.T) {
			want, err := generatedEnvoyConfig(f)
			if err != nil {
				t.Fatalf("the command on the first line is rejected: %v", err)
			}
			if *update {
				if err := os.WriteFile(f.Path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				f.Body = want
			} else if !bytes.Equal(f.Body, want) {
				t.Fatalf("stale: it is not what its first line generates; run go test ./deploy -run TestEnvoyConfigs -update")
			}
			// Validation opens the TLS files: point them at a real pair.
			b := f.Body
			if f.Config.TLSCertFile != "" {
				b = bytes.ReplaceAll(b, []byte(f.Config.TLSCertFile), []byte(certFile))
				b = bytes.ReplaceAll(b, []byte(f.Config.TLSKeyFile), []byte(keyFile))
			}
			if out, err := testutil.ValidateEnvoyConfig(t, b); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// settingsDisagree lists where an Envoy bootstrap and the settings of a
// wsedge authz or dialer disagree about the hosts (README "what must
// agree"): Envoy would route a host that wsedge does not serve, or the
// other way round.
func settingsDisagree(cfg envoy.Config, env map[string]string) []error {
	var errs []error
	access, err := url.Parse(env["WSEDGE_ACCESS_URL"])
	if err != nil || access.Host == "" {
		errs = append(errs, fmt.Errorf("WSEDGE_ACCESS_URL %q is not a URL", env["WSEDGE_ACCESS_URL"]))
	} else if !strings.EqualFold(access.Host, cfg.AccessURLHost) {
		errs = append(errs, fmt.Errorf("access URL host %q, Envoy's --access-url-host %q", access.Host, cfg.AccessURLHost))
	}
	if !strings.EqualFold(env["WSEDGE_WILDCARD_HOSTNAME"], cfg.WildcardHostname) {
		errs = append(errs, fmt.Errorf("wildcard %q, Envoy's --wildcard-hostname %q", env["WSEDGE_WILDCARD_HOSTNAME"], cfg.WildcardHostname))
	}
	primary, err1 := url.Parse(env["WSEDGE_PRIMARY_URL"])
	dash, err2 := url.Parse(cfg.DashboardURL)
	if err1 != nil || err2 != nil || !strings.EqualFold(primary.Scheme+"://"+primary.Host, dash.Scheme+"://"+dash.Host) {
		errs = append(errs, fmt.Errorf("primary URL %q, Envoy's --dashboard-url %q (its origin is the one CORS allows)", env["WSEDGE_PRIMARY_URL"], cfg.DashboardURL))
	}
	return errs
}

func TestSettingsDisagree(t *testing.T) {
	cfg := envoy.DefaultConfig()
	cfg.AccessURLHost, cfg.WildcardHostname, cfg.DashboardURL = "proxy.example.com", "*.apps.example.com", "https://coder.example.com"
	good := map[string]string{
		"WSEDGE_ACCESS_URL":        "https://Proxy.example.com",
		"WSEDGE_WILDCARD_HOSTNAME": "*.apps.example.com",
		"WSEDGE_PRIMARY_URL":       "https://coder.example.com/",
	}
	if errs := settingsDisagree(cfg, good); len(errs) != 0 {
		t.Fatalf("agreeing settings: %v", errs)
	}
	for k, v := range map[string]string{
		"WSEDGE_ACCESS_URL":        "https://proxy.example.org",
		"WSEDGE_WILDCARD_HOSTNAME": "*.apps.example.org",
		"WSEDGE_PRIMARY_URL":       "http://coder.example.com",
	} {
		bad := maps.Clone(good)
		bad[k] = v
		if errs := settingsDisagree(cfg, bad); len(errs) != 1 {
			t.Errorf("%s = %q: %d disagreements reported, want 1: %v", k, v, len(errs), errs)
		}
	}
}
