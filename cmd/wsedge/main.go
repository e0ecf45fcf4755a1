// Command wsedge is the single binary of wsedge: the ext_authz/ext_proc
// service, the dialer upstream, the one-command demo and the operator tools.
//
// Every subcommand is written the same way: a struct that holds its flag
// values, with flags (register them on a FlagSet) and run (do the work once
// they are parsed), listed once in commands below. Every flag can also be
// set by its environment variable WSEDGE_<FLAG>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one subcommand of the binary.
type command interface {
	// flags registers the command's flags on fs, bound to its fields.
	flags(fs *flag.FlagSet)
	// run does the command's work once the flags are parsed. stdout and
	// stderr are the process's; a returned error is printed once, as
	// "wsedge <command>: <error>".
	run(ctx context.Context, stdout, stderr io.Writer) error
}

// entry is a command as `wsedge --help` lists it.
type entry struct {
	name    string
	summary string
	cmd     command
}

// commands lists every subcommand, in the order `wsedge --help` shows them.
// It returns new command values, so each run starts from the defaults.
func commands() []entry {
	return []entry{
		{"authz", "Run the ext_authz (and ext_proc) gRPC service Envoy asks about every app and terminal request.", &authzCmd{}},
		{"dev", "Run the whole thing on this machine: real Envoy, authz, dialer, a dev primary and a dev agent over a real tailnet.", &devCmd{}},
		{"dialer", "Run the upstream Envoy forwards allowed app and terminal traffic to: into the tailnet, plus DERP, health and registration.", &dialerCmd{}},
		{"doctor", "Check a configuration before going live: primary, proxy token, keys, access URL, wildcard, Envoy config and DERP; exits 1 if a check fails.", &doctorCmd{}},
		{"envoy-config", "Print the Envoy bootstrap YAML for the edge in front of wsedge authz and dialer.", &envoyConfigCmd{}},
		{"version", "Print the wsedge version and the Go runtime it was built with.", &versionCmd{}},
	}
}

// lookupCommand finds a command by name.
func lookupCommand(name string) (entry, bool) {
	for _, e := range commands() {
		if e.name == name {
			return e, true
		}
	}
	return entry{}, false
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			args = []string{args[1], "--help"}
		} else {
			usage(stdout)
			return 0
		}
	}
	e, ok := lookupCommand(args[0])
	if !ok {
		fmt.Fprintf(stderr, "wsedge: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("wsedge "+e.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	e.cmd.flags(fs)
	fs.Usage = func() {} // printed below, once, to stdout
	if err := parseWithEnv(fs, args[1:], os.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout, e, fs)
			return 0
		}
		fmt.Fprintf(stderr, "wsedge %s: %v\n(run 'wsedge %s --help' for usage)\n", e.name, err, e.name)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wsedge %s: unexpected arguments %q\n", e.name, fs.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := e.cmd.run(ctx, stdout, stderr); err != nil {
		// The package that failed names itself in err; when that is the
		// command's namesake (authz, dialer), say it once.
		fmt.Fprintf(stderr, "wsedge %s: %s\n", e.name, strings.TrimPrefix(err.Error(), e.name+": "))
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "wsedge — a Coder workspace-app proxy for an Envoy edge.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: wsedge <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, e := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", e.name, e.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag can also be set by an environment variable WSEDGE_<FLAG>,")
	fmt.Fprintln(w, "upper-cased with '-' turned into '_' (e.g. --primary-url → WSEDGE_PRIMARY_URL).")
	fmt.Fprintln(w, "Flags given on the command line win over the environment.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'wsedge <command> --help' for a command's flags.")
}

func commandUsage(w io.Writer, e entry, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: wsedge %s [flags]\n\n%s\n", e.name, e.summary)
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		typ, help := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		line := fmt.Sprintf("%s\n      %s\n      env %s", head, strings.ReplaceAll(help, "\n", "\n      "), envName(f.Name))
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			line += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		lines = append(lines, line)
	})
	if len(lines) > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s\n", strings.Join(lines, "\n"))
	}
}
