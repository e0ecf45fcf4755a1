package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/wsedge/wsedge/internal/buildinfo"
)

func init() {
	register(command{
		name:    "version",
		summary: "Print the wsedge version and the Go runtime it was built with.",
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			return func(context.Context, []string) error {
				_, err := fmt.Fprintf(os.Stdout, "wsedge %s (%s, %s/%s)\n", buildinfo.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
				return err
			}
		},
	})
}
