package main

import (
	"flag"
	"fmt"
	"strings"
)

// envName is the environment variable that stands for a flag.
func envName(flagName string) string {
	return "WSEDGE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseWithEnv parses args, then fills every flag that the command line did
// not set from its WSEDGE_<FLAG> environment variable.
func parseWithEnv(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("invalid value %q for %s: %w", v, envName(f.Name), e)
		}
	})
	return err
}
