// Command wsedge is the single binary of wsedge: the ext_authz/ext_proc
// service, the dialer upstream, the one-command demo and the operator tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand of the binary.
type command struct {
	name    string
	summary string
	// takesArgs allows positional arguments after the flags.
	takesArgs bool
	// setup registers the subcommand's flags and returns the function that
	// runs it once the flags are parsed.
	setup func(fs *flag.FlagSet) func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

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
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "wsedge: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("wsedge "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	runFn := cmd.setup(fs)
	fs.Usage = func() {} // printed below, once, to stdout
	if err := parseWithEnv(fs, args[1:], os.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout, cmd, fs)
			return 0
		}
		fmt.Fprintf(stderr, "wsedge %s: %v\n(run 'wsedge %s --help' for usage)\n", cmd.name, err, cmd.name)
		return 2
	}
	if fs.NArg() > 0 && !cmd.takesArgs {
		fmt.Fprintf(stderr, "wsedge %s: unexpected arguments %q\n", cmd.name, fs.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runFn(ctx, fs.Args()); err != nil {
		fmt.Fprintf(stderr, "wsedge %s: %v\n", cmd.name, err)
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
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag can also be set by an environment variable WSEDGE_<FLAG>,")
	fmt.Fprintln(w, "upper-cased with '-' turned into '_' (e.g. --primary-url → WSEDGE_PRIMARY_URL).")
	fmt.Fprintln(w, "Flags given on the command line win over the environment.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'wsedge <command> --help' for a command's flags.")
}

func commandUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: wsedge %s [flags]\n\n%s\n", c.name, c.summary)
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
