package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/wsedge/wsedge/internal/buildinfo"
)

// versionCmd is `wsedge version`; it has no flags.
type versionCmd struct{}

func (*versionCmd) flags(*flag.FlagSet) {}

func (*versionCmd) run(_ context.Context, stdout, _ io.Writer) error {
	_, err := fmt.Fprintf(stdout, "wsedge %s (%s, %s/%s)\n", buildinfo.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
