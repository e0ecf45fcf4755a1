package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/wsedge/wsedge/internal/testutil"
)

// flagUse is where a manifest sets flags of one wsedge subcommand: as
// command-line arguments and as WSEDGE_<FLAG> environment variables.
type flagUse struct {
	Where string // file and object, for messages
	Cmd   string // subcommand, e.g. "dialer"
	Flags []string
	Envs  []string // only WSEDGE_* names
}

// argFlags returns the flag names in args ("--x v", "--x=v", "-x").
func argFlags(args []string) []string {
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		out = append(out, name)
	}
	return out
}

// envFlag is the flag a WSEDGE_<FLAG> variable stands for, as cmd/wsedge
// derives the name (upper case, '-' → '_').
func envFlag(env string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "WSEDGE_")), "_", "-")
}

var (
	wsedgeBinOnce sync.Once
	wsedgeBin     string
	wsedgeBinErr  error
	wsedgeBinDir  string // created by TestMain, removed after the tests
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsedge-deploy-test-")
	if err != nil {
		panic(err)
	}
	wsedgeBinDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildWsedge builds cmd/wsedge once per test binary.
func buildWsedge(t *testing.T) string {
	t.Helper()
	wsedgeBinOnce.Do(func() {
		bin := filepath.Join(wsedgeBinDir, "wsedge")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/wsedge")
		cmd.Dir = testutil.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			wsedgeBinErr = errors.New("go build ./cmd/wsedge: " + err.Error() + "\n" + string(out))
			return
		}
		wsedgeBin = bin
	})
	if wsedgeBinErr != nil {
		t.Fatal(wsedgeBinErr)
	}
	return wsedgeBin
}

var helpFlagLine = regexp.MustCompile(`(?m)^  --([a-z0-9][a-z0-9-]*)`)

// wsedgeFlags returns the flag names `wsedge <cmd> --help` lists. ok is
// false when this build of wsedge has no such subcommand yet.
func wsedgeFlags(t *testing.T, cmd string) (flags map[string]bool, ok bool) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := exec.Command(buildWsedge(t), cmd, "--help")
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if strings.Contains(stderr.String(), "unknown command") {
		return nil, false
	}
	if err != nil {
		t.Fatalf("wsedge %s --help: %v\n%s", cmd, err, stderr.String())
	}
	flags = map[string]bool{}
	for _, m := range helpFlagLine.FindAllStringSubmatch(stdout.String(), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("wsedge %s --help lists no flags:\n%s", cmd, stdout.String())
	}
	return flags, true
}

// checkFlagUses fails for every flag or WSEDGE_ variable that the named
// subcommand does not have, and skips the uses of subcommands this build of
// wsedge does not have yet.
func checkFlagUses(t *testing.T, uses []flagUse) {
	t.Helper()
	if len(uses) == 0 {
		t.Fatal("no wsedge flag uses found: the manifests were not read")
	}
	byCmd := map[string][]flagUse{}
	for _, u := range uses {
		byCmd[u.Cmd] = append(byCmd[u.Cmd], u)
	}
	for cmd, uses := range byCmd {
		t.Run(cmd, func(t *testing.T) {
			flags, ok := wsedgeFlags(t, cmd)
			if !ok {
				t.Skipf("wsedge has no %q subcommand yet: its flags in %d places are not checked", cmd, len(uses))
			}
			for _, u := range uses {
				for _, f := range u.Flags {
					if !flags[f] {
						t.Errorf("%s: wsedge %s has no flag --%s", u.Where, cmd, f)
					}
				}
				for _, e := range u.Envs {
					if !flags[envFlag(e)] {
						t.Errorf("%s: %s sets no flag of wsedge %s (there is no --%s)", u.Where, e, cmd, envFlag(e))
					}
				}
			}
		})
	}
}

func TestFlagHelpers(t *testing.T) {
	if got := argFlags([]string{"dialer", "--derp=false", "--relay-address", "http://x", "-log-level", "info"}); strings.Join(got, ",") != "derp,relay-address,log-level" {
		t.Fatalf("argFlags = %q", got)
	}
	if got := envFlag("WSEDGE_XFF_NUM_TRUSTED_HOPS"); got != "xff-num-trusted-hops" {
		t.Fatalf("envFlag = %q", got)
	}
	// envoy-config exists today: the helper must find its flags and refuse a
	// misspelt one.
	flags, ok := wsedgeFlags(t, "envoy-config")
	if !ok || !flags["authz-addr"] || !flags["admin-addr"] || flags["admn-addr"] {
		t.Fatalf("wsedge envoy-config flags = %v (ok %v)", flags, ok)
	}
	if _, ok := wsedgeFlags(t, "no-such-command"); ok {
		t.Fatal("an unknown subcommand was reported as existing")
	}
}
