package main

import (
	"context"
	"flag"
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
			return func(context.Context, []string) error {
				out, err := envoy.YAML(cfg)
				if err != nil {
					return err
				}
				_, err = os.Stdout.Write(out)
				return err
			}
		},
	})
}
