package main

import (
	"bytes"
	"context"
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

func TestHelpListsEveryFlagWithItsEnvVar(t *testing.T) {
	for name, c := range commands {
		var out, errb bytes.Buffer
		if code := run([]string{name, "--help"}, &out, &errb); code != 0 {
			t.Fatalf("%s --help exited %d: %s", name, code, errb.String())
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		c.setup(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(out.String(), "--"+f.Name) || !strings.Contains(out.String(), envName(f.Name)) {
				t.Errorf("%s --help does not document --%s / %s", name, f.Name, envName(f.Name))
			}
			if f.Usage == "" {
				t.Errorf("%s --%s has no help text", name, f.Name)
			}
		})
		if strings.Count(out.String(), "Usage:") != 1 {
			t.Errorf("%s --help printed usage %d times", name, strings.Count(out.String(), "Usage:"))
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
	_ = context.Background()
	if code := run([]string{"version", "extra"}, &out, &errb); code != 2 {
		t.Fatalf("version with an extra argument exited %d", code)
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
