package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/wsedge/wsedge/cmd/wsedge/envoyflags"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/doctor"
	"github.com/wsedge/wsedge/primary"
)

// errChecksFailed makes `wsedge doctor` exit 1 after printing its report.
var errChecksFailed = errors.New("some checks failed (see the hints above)")

// doctorCmd is `wsedge doctor`. It checks the same settings as authz and
// the dialer take, plus the Envoy flags of `wsedge envoy-config` (whose
// access host, wildcard and dashboard URL are derived from --access-url,
// --wildcard-hostname and --primary-url).
type doctorCmd struct {
	pf          primaryFlags
	af          appFlags
	envoy       envoy.Config
	derp        bool
	checkEdge   bool
	checkEnvoy  bool
	envoyBinary string
}

// derivedEnvoyFlags are Envoy flags doctor fills in itself.
var derivedEnvoyFlags = map[string]bool{"access-url-host": true, "wildcard-hostname": true, "dashboard-url": true}

func (d *doctorCmd) flags(fs *flag.FlagSet) {
	d.pf.register(fs)
	d.af.registerHosts(fs)
	fs.BoolVar(&d.derp, "derp", true, "the dialer serves DERP: check <access-url>/derp/latency-check through the edge")
	fs.BoolVar(&d.checkEdge, "check-edge", false, "also GET <access-url>/healthz through the edge (Envoy and the dialer must be running)")
	fs.BoolVar(&d.checkEnvoy, "check-envoy", true, "generate the Envoy bootstrap from these flags and validate it with the installed envoy")
	// Its environment variable, WSEDGE_ENVOY_BIN, is also the one
	// envoyrun.FindBinary reads.
	fs.StringVar(&d.envoyBinary, "envoy-bin", "", "Envoy `binary` to validate with (default: .tools/bin/envoy of this repository, then envoy on PATH)")
	d.envoy = envoy.DefaultConfig()
	efs := flag.NewFlagSet("envoy", flag.ContinueOnError)
	envoyflags.Register(efs, &d.envoy)
	efs.VisitAll(func(f *flag.Flag) {
		if derivedEnvoyFlags[f.Name] || fs.Lookup(f.Name) != nil {
			return
		}
		fs.Var(f.Value, f.Name, "Envoy: "+f.Usage)
	})
}

// run runs the checks, prints one line per check and returns
// errChecksFailed if any failed.
func (d *doctorCmd) run(ctx context.Context, stdout, _ io.Writer) error {
	primaryURL, err := d.pf.parse()
	if err != nil {
		return err
	}
	client, err := primary.New(primary.Options{URL: primaryURL, ProxyToken: d.pf.proxyToken, Timeout: d.pf.timeout, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	cfg := doctor.Config{
		Primary:          client,
		ProxyToken:       d.pf.proxyToken,
		AccessURL:        d.af.accessURL,
		WildcardHostname: d.af.wildcardHostname,
		DERP:             d.derp,
		CheckEdge:        d.checkEdge,
		EnvoyBinary:      d.envoyBinary,
		Timeout:          d.pf.timeout,
	}
	if d.checkEnvoy {
		ec := d.envoy
		cfg.Envoy = &ec
		if wd, err := os.Getwd(); err == nil {
			cfg.EnvoySearchDirs = append(cfg.EnvoySearchDirs, wd)
		}
		if exe, err := os.Executable(); err == nil {
			cfg.EnvoySearchDirs = append(cfg.EnvoySearchDirs, filepath.Dir(exe))
		}
	}
	if d.envoyBinary != "" {
		if _, err := os.Stat(d.envoyBinary); err != nil {
			return fmt.Errorf("--envoy-bin: %w", err)
		}
	}
	results := doctor.Run(ctx, cfg)
	if err := doctor.Print(stdout, results); err != nil {
		return err
	}
	if doctor.Failed(results) {
		return errChecksFailed
	}
	return nil
}
