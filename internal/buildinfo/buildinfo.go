// Package buildinfo reports the version of this wsedge build. The version is
// set at link time by the Makefile; a plain `go build` reports "dev".
package buildinfo

import "runtime/debug"

// version is overwritten with -ldflags "-X ...buildinfo.version=...".
var version = ""

// Version returns the build's version string.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
