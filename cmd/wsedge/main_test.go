package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/envoy"
)

func TestParseWithEnv(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantDur time.Duration
		wantErr string
	}{
		{name: "default", want: "def", wantDur: time.Second},
		{name: "env fills unset flag", env: map[string]string{"WSEDGE_PRIMARY_URL": "https://coder.example.com", "WSEDGE_SOME_TIMEOUT": "5s"}, want: "https://coder.example.com", wantDur: 5 * time.Second},
		{name: "command line wins over env", args: []string{"--primary-url", "https://cli"}, env: map[string]string{"WSEDGE_PRIMARY_URL": "https://env"}, want: "https://cli", wantDur: time.Second},
		{name: "bad env value is an error naming the variable", env: map[string]string{"WSEDGE_SOME_TIMEOUT": "soon"}, wantErr: "WSEDGE_SOME_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			url := fs.String("primary-url", "def", "")
			dur := fs.Duration("some-timeout", time.Second, "")
			err := parseWithEnv(fs, tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want mention of %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *url != tt.want || *dur != tt.wantDur {
				t.Fatalf("got %q %v, want %q %v", *url, *dur, tt.want, tt.wantDur)
			}
		})
	}
}

// TestEveryCommandFollowsTheIdiom runs `wsedge <cmd> --help` for every
// command listed in main.go: the command is in `wsedge --help`, its help
// prints once and documents every flag with its WSEDGE_<FLAG> variable and
// a help text, and the environment variable really sets the flag.
func TestEveryCommandFollowsTheIdiom(t *testing.T) {
	var top, topErr bytes.Buffer
	if code := run([]string{"--help"}, &top, &topErr); code != 0 {
		t.Fatalf("wsedge --help exited %d: %s", code, topErr.String())
	}
	seen := map[string]bool{}
	for _, e := range commands() {
		t.Run(e.name, func(t *testing.T) {
			if seen[e.name] {
				t.Fatalf("%s is listed twice", e.name)
			}
			seen[e.name] = true
			if !strings.Contains(top.String(), "  "+e.name+" ") || !strings.Contains(top.String(), e.summary) {
				t.Errorf("wsedge --help does not list %s with its summary", e.name)
			}
			var out, errb bytes.Buffer
			if code := run([]string{e.name, "--help"}, &out, &errb); code != 0 {
				t.Fatalf("%s --help exited %d: %s", e.name, code, errb.String())
			}
			if strings.Count(out.String(), "Usage:") != 1 {
				t.Errorf("%s --help printed usage %d times", e.name, strings.Count(out.String(), "Usage:"))
			}
			fs := flag.NewFlagSet(e.name, flag.ContinueOnError)
			e.cmd.flags(fs)
			env := map[string]string{}
			fs.VisitAll(func(f *flag.Flag) {
				if !strings.Contains(out.String(), "  --"+f.Name+"\n") && !strings.Contains(out.String(), "  --"+f.Name+" ") {
					t.Errorf("%s --help does not document --%s", e.name, f.Name)
				}
				if !strings.Contains(out.String(), "env "+envName(f.Name)) {
					t.Errorf("%s --help does not name %s for --%s", e.name, envName(f.Name), f.Name)
				}
				if strings.TrimSpace(f.Usage) == "" {
					t.Errorf("%s --%s has no help text", e.name, f.Name)
				}
				if f.Value.Set(f.DefValue) == nil { // a value the flag accepts
					env[envName(f.Name)] = f.DefValue
				}
			})
			// Every flag whose default it accepts back is set from its
			// environment variable.
			if err := parseWithEnv(fs, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
				t.Fatal(err)
			}
			fs.VisitAll(func(f *flag.Flag) {
				if _, ok := env[envName(f.Name)]; !ok {
					return
				}
				set := false
				fs.Visit(func(g *flag.Flag) { set = set || g.Name == f.Name })
				if !set {
					t.Errorf("%s: %s did not set --%s", e.name, envName(f.Name), f.Name)
				}
			})
		})
	}
}

// TestEnvironmentReachesTheCommand: a WSEDGE_<FLAG> variable is read when
// the binary runs a command, not only by parseWithEnv in a test.
func TestEnvironmentReachesTheCommand(t *testing.T) {
	t.Setenv("WSEDGE_ACCESS_URL_HOST", "proxy.env.example.com")
	var out, errb bytes.Buffer
	if code := run([]string{"envoy-config", "--wildcard-hostname", "*.apps.env.example.com"}, &out, &errb); code != 0 {
		t.Fatalf("envoy-config exited %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "proxy.env.example.com") || !strings.Contains(out.String(), "apps.env.example.com") {
		t.Fatalf("the generated config ignores WSEDGE_ACCESS_URL_HOST or --wildcard-hostname:\n%.2000s", out.String())
	}
}

// TestOneEnvoyBinaryFlag: the commands that run Envoy name its binary the
// same way, --envoy-bin (WSEDGE_ENVOY_BIN, the variable the Envoy lookup
// and the Makefile use too).
func TestOneEnvoyBinaryFlag(t *testing.T) {
	for _, e := range commands() {
		fs := flag.NewFlagSet(e.name, flag.ContinueOnError)
		e.cmd.flags(fs)
		if fs.Lookup("envoy") != nil {
			t.Errorf("%s has --envoy; the Envoy binary flag is --envoy-bin", e.name)
		}
		if (e.name == "dev" || e.name == "doctor") && fs.Lookup("envoy-bin") == nil {
			t.Errorf("%s has no --envoy-bin", e.name)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version", "extra"}, &out, &errb); code != 2 {
		t.Fatalf("version with an extra argument exited %d", code)
	}
}

// TestDevRefusesAnUnknownAccessLogMode: wsedge dev says what --access-log
// takes before it starts anything.
func TestDevRefusesAnUnknownAccessLogMode(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"dev", "--access-log", "verbose"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `--access-log "verbose": want all, errors or off`) || strings.Contains(errb.String(), "starting") {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
}

// TestEnvoyConfigOutput: --output writes what envoy-config would print, so
// an init container without a shell can produce the bootstrap.
func TestEnvoyConfigOutput(t *testing.T) {
	file := filepath.Join(t.TempDir(), "envoy.yaml")
	var out, errb bytes.Buffer
	if code := run([]string{"envoy-config", "--output", file, "--access-url-host", "proxy.example.com"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := envoy.DefaultConfig()
	cfg.AccessURLHost = "proxy.example.com"
	want, err := envoy.YAML(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the file is not the bootstrap envoy-config generates")
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm()&0o004 == 0 {
		t.Errorf("the file is not readable by Envoy's user: %v", fi.Mode())
	}
	if code := run([]string{"envoy-config", "--output", filepath.Join(t.TempDir(), "missing", "envoy.yaml")}, &out, &errb); code == 0 {
		t.Error("an unwritable --output succeeded")
	}
}

func TestVersionPrints(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "wsedge ") {
		t.Fatalf("version exited %d, printed %q", code, out.String())
	}
}
