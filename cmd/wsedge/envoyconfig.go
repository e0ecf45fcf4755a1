package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/wsedge/wsedge/cmd/wsedge/envoyflags"
	"github.com/wsedge/wsedge/envoy"
)

// envoyConfigCmd is `wsedge envoy-config`: its flags are the fields of
// envoy.Config (envoyflags), starting from envoy.DefaultConfig.
type envoyConfigCmd struct {
	cfg    envoy.Config
	output string
}

func (c *envoyConfigCmd) flags(fs *flag.FlagSet) {
	c.cfg = envoy.DefaultConfig()
	envoyflags.Register(fs, &c.cfg)
	fs.StringVar(&c.output, "output", "", "write the bootstrap to this `file` instead of standard output (for an init container: the image has no shell to redirect with)")
}

func (c *envoyConfigCmd) run(_ context.Context, stdout, _ io.Writer) error {
	out, err := envoy.YAML(c.cfg)
	if err != nil {
		return err
	}
	if c.output == "" {
		_, err = stdout.Write(out)
		return err
	}
	// Envoy runs as another user: the file is world-readable.
	if err := os.WriteFile(c.output, out, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", c.output, err)
	}
	return nil
}
