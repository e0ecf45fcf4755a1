package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/derp"
	devprimary "github.com/wsedge/wsedge/dev/primary"
)

type noPolls struct{}

func (noPolls) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("health polls disabled in this test")
}

// doctorWorld starts the dev primary and a stand-in edge serving the real
// DERP handler, both on loopback, and returns the doctor's command line.
func doctorWorld(t *testing.T) (primaryURL, token, edgeURL string) {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	u, _ := url.Parse("http://" + ts.Listener.Addr().String())
	dev, err := devprimary.New(devprimary.Options{AccessURL: u, HealthInterval: time.Hour,
		HTTPClient: &http.Client{Transport: noPolls{}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = dev.Handler()
	ts.Start()
	t.Cleanup(func() { ts.Close(); _ = dev.Close() })
	d, err := derp.New(derp.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	mux := http.NewServeMux()
	mux.Handle("/derp/", d)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") })
	edge := httptest.NewServer(mux)
	t.Cleanup(edge.Close)
	return u.String(), dev.ProxyToken(), edge.URL
}

// parseDoctor parses a doctor command line (and environment) the way
// `wsedge doctor` does.
func parseDoctor(t *testing.T, args []string, env map[string]string) *doctorCmd {
	t.Helper()
	d := &doctorCmd{}
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	d.flags(fs)
	if err := parseWithEnv(fs, args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDoctorCommandPassesAgainstTheDevPrimary(t *testing.T) {
	pu, token, edge := doctorWorld(t)
	eu, _ := url.Parse(edge)
	d := parseDoctor(t, []string{"--primary-url", pu, "--access-url", edge,
		"--wildcard-hostname", "*.apps.localhost:" + eu.Port(), "--check-edge", "--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"},
		map[string]string{"WSEDGE_PROXY_TOKEN": token})
	var out bytes.Buffer
	if err := d.run(context.Background(), &out, io.Discard); err != nil {
		t.Fatalf("doctor: %v\n%s", err, out.String())
	}
	for _, line := range []string{"✓ primary ", "✓ proxy token ", "✓ crypto keys ", "✓ access URL ", "✓ wildcard hostname ", "✓ derp ", "✓ edge "} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("no %q line in:\n%s", line, out.String())
		}
	}
	// The Envoy check passes, or warns when this machine has no Envoy.
	if !strings.Contains(out.String(), "✓ envoy config ") && !strings.Contains(out.String(), "! envoy config ") {
		t.Errorf("envoy line:\n%s", out.String())
	}
}

func TestDoctorCommandWrongTokenExitsWithTheHint(t *testing.T) {
	pu, token, edge := doctorWorld(t)
	id, _, _ := strings.Cut(token, ":")
	d := parseDoctor(t, []string{"--primary-url", pu, "--proxy-token", id + ":" + strings.Repeat("f", 64),
		"--access-url", edge, "--check-envoy=false"}, nil)
	var out bytes.Buffer
	err := d.run(context.Background(), &out, io.Discard)
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("err = %v, want errChecksFailed\n%s", err, out.String())
	}
	if strings.Count(out.String(), "✗") != 1 || !strings.Contains(out.String(), "✗ proxy token        token rejected: Invalid external proxy token: Invalid proxy token secret.") ||
		!strings.Contains(out.String(), "coder wsproxy regenerate-token") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func TestDoctorEnvoyFlagsAreDerived(t *testing.T) {
	var d doctorCmd
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	d.flags(fs)
	for name := range derivedEnvoyFlags {
		if name == "wildcard-hostname" {
			// The app flag of that name feeds Envoy too.
			if !strings.Contains(fs.Lookup(name).Usage, "subdomain apps") || strings.HasPrefix(fs.Lookup(name).Usage, "Envoy:") {
				t.Errorf("--%s is not the app flag: %q", name, fs.Lookup(name).Usage)
			}
			continue
		}
		if fs.Lookup(name) != nil {
			t.Errorf("--%s is registered; doctor derives it", name)
		}
	}
	for _, name := range []string{"tls-cert", "tls-key", "authz-addr", "dialer-addr", "rate-limit", "listen"} {
		if fs.Lookup(name) == nil {
			t.Errorf("Envoy flag --%s missing", name)
		}
	}
	if err := parseWithEnv(fs, []string{"--rate-limit", "7"}, func(string) (string, bool) { return "", false }); err != nil {
		t.Fatal(err)
	}
	if d.envoy.RateLimit.Requests != 7 {
		t.Fatalf("--rate-limit did not reach the Envoy config: %d", d.envoy.RateLimit.Requests)
	}
}

func TestDoctorNeedsThePrimaryFlags(t *testing.T) {
	d := parseDoctor(t, []string{"--access-url", "https://eu.example.com"}, nil)
	if err := d.run(context.Background(), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--primary-url is required") {
		t.Fatalf("err = %v", err)
	}
}
