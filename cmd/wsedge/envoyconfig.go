package main

import (
	"context"
	"flag"
	"io"

	"github.com/wsedge/wsedge/cmd/wsedge/envoyflags"
	"github.com/wsedge/wsedge/envoy"
)

// envoyConfigCmd is `wsedge envoy-config`: its flags are the fields of
// envoy.Config (envoyflags), starting from envoy.DefaultConfig.
type envoyConfigCmd struct {
	cfg envoy.Config
}

func (c *envoyConfigCmd) flags(fs *flag.FlagSet) {
	c.cfg = envoy.DefaultConfig()
	envoyflags.Register(fs, &c.cfg)
}

func (c *envoyConfigCmd) run(_ context.Context, stdout, _ io.Writer) error {
	out, err := envoy.YAML(c.cfg)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}
