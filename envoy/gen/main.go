// Command gen writes the example Envoy bootstraps of package envoy into a
// directory; `go generate ./envoy/...` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wsedge/wsedge/envoy"
)

func main() {
	out := flag.String("out", "examples", "directory to write the examples to")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	for _, ex := range envoy.Examples() {
		b, err := envoy.YAML(ex.Config)
		if err != nil {
			return fmt.Errorf("%s: %w", ex.File, err)
		}
		if err := os.WriteFile(filepath.Join(dir, ex.File), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
