package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/wsedge/wsedge/envoy"
)

func init() {
	register(command{
		name:    "envoy-config",
		summary: "Print the Envoy bootstrap YAML for the edge in front of wsedge authz and dialer.",
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			cfg := envoy.DefaultConfig()
			cfg.RegisterFlags(fs)
			output := fs.String("output", "", "write the bootstrap to this `file` instead of standard output (for an init container: the image has no shell to redirect with)")
			return func(context.Context, []string) error {
				out, err := envoy.YAML(cfg)
				if err != nil {
					return err
				}
				if *output == "" {
					_, err = os.Stdout.Write(out)
					return err
				}
				// Envoy runs as another user: the file is world-readable.
				if err := os.WriteFile(*output, out, 0o644); err != nil {
					return fmt.Errorf("envoy-config: %w", err)
				}
				return nil
			}
		},
	})
}
