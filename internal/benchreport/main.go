// Command benchreport runs every benchmark of the project and prints one
// table: each figure next to a baseline measured in the same run, and
// their ratio (value / baseline). `make bench` runs it and writes the
// table with a description of the machine to bench/results/latest.md.
// With -soak it runs the soak tests of e2e instead and writes their
// results (bench/results/soak.md).
//
// How figures find their baselines (see Pair): within one benchmark, a
// metric `baseline-<unit>` is the baseline of `<unit>`; across
// benchmarks of one package, `BenchmarkXBaseline[/sub]` is the baseline
// of `BenchmarkX[/sub]` and a sub-benchmark named `baseline` is the
// baseline of its siblings. A few benchmarks older than this convention
// are paired by name in legacyBenchBaselines and legacyMetricBaselines.
//
//	go run ./internal/benchreport [-tags T] [-bench RE] [-benchtime D] [-count N] [-pkgs ./...] [-out FILE]
//	go run ./internal/benchreport -in run.json        # report a saved `go test -json` run
//	go run ./internal/benchreport -soak [-out FILE]   # soak tests → FILE
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const module = "github.com/wsedge/wsedge"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

type options struct {
	goBin, tags, bench, benchtime, count, timeout, in, out, raw, soakRun string
	pkgs                                                                 []string
	soak                                                                 bool
}

func run() error {
	var o options
	flag.StringVar(&o.goBin, "go", "go", "the go command")
	flag.StringVar(&o.tags, "tags", "", "build tags for go test")
	flag.StringVar(&o.bench, "bench", ".", "benchmarks to run (go test -bench)")
	flag.StringVar(&o.benchtime, "benchtime", "", "go test -benchtime (default: go test's)")
	flag.StringVar(&o.count, "count", "", "go test -count: run each benchmark this many times; the report shows each figure's mean (default: once)")
	flag.StringVar(&o.timeout, "timeout", "60m", "go test -timeout")
	flag.StringVar(&o.in, "in", "", "read this saved `go test -json` output instead of running")
	flag.StringVar(&o.out, "out", "", "also write the report (Markdown) to this file")
	flag.StringVar(&o.raw, "raw", "", "also save go test's JSON output to this file")
	flag.BoolVar(&o.soak, "soak", false, "run the soak tests (e2e TestSoak*) and report them")
	flag.StringVar(&o.soakRun, "soak-run", "^TestSoak", "with -soak: the soak tests to run (go test -run)")
	flag.Parse()
	o.pkgs = flag.Args()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.soak {
		return runSoak(ctx, o)
	}
	if len(o.pkgs) == 0 {
		o.pkgs = []string{"./..."}
	}
	mach := describeMachine(ctx, o.goBin, time.Now())
	var events []byte
	var testErr error
	if o.in != "" {
		b, err := os.ReadFile(o.in)
		if err != nil {
			return err
		}
		events = b
	} else {
		args := []string{"test", "-run", "^$", "-bench", o.bench, "-benchmem", "-json", "-timeout", o.timeout}
		if o.tags != "" {
			args = append(args, "-tags", o.tags)
		}
		if o.benchtime != "" {
			args = append(args, "-benchtime", o.benchtime)
		}
		if o.count != "" {
			args = append(args, "-count", o.count)
		}
		args = append(args, o.pkgs...)
		fmt.Fprintf(os.Stderr, "benchreport: %s %s\n", o.goBin, strings.Join(args, " "))
		events, testErr = goTest(ctx, o.goBin, args, nil)
	}
	mach.LoadEnd = loadAvg()
	if o.raw != "" {
		if err := os.WriteFile(o.raw, events, 0o644); err != nil {
			return err
		}
	}
	res, err := ParseJSON(bytes.NewReader(events), module, runtime.GOMAXPROCS(0))
	if err != nil {
		return err
	}
	rows := Pair(Merge(res.Results))
	report := benchMarkdown(mach, o, rows, res.Failures)
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "benchreport: wrote %s\n", o.out)
	}
	if len(res.Failures) > 0 {
		return fmt.Errorf("%d benchmark failures (listed in the report)", len(res.Failures))
	}
	if testErr != nil {
		return testErr
	}
	if len(rows) == 0 {
		return errors.New("no benchmark results")
	}
	return nil
}

// goTest runs go with args, echoing benchmark result lines to stderr as
// they come so a long run shows progress, and returns its stdout.
func goTest(ctx context.Context, goBin string, args, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		progress(io.TeeReader(pr, &out), os.Stderr)
	}()
	err := cmd.Run()
	_ = pw.Close()
	<-done
	if err != nil {
		return out.Bytes(), fmt.Errorf("go %s: %w", args[0], err)
	}
	return out.Bytes(), nil
}

// benchEnv is the WSEDGE_BENCH_* settings of the run (knobs of the
// benchmarks themselves), as a command prefix.
func benchEnv() string {
	var b strings.Builder
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WSEDGE_BENCH_") && !strings.HasSuffix(kv, "=") {
			b.WriteString(kv + " ")
		}
	}
	return b.String()
}

func benchMarkdown(m Machine, o options, rows []Row, failures []string) string {
	var b strings.Builder
	b.WriteString("# wsedge benchmarks\n\n")
	b.WriteString("Written by `make bench` (`go run ./internal/benchreport`). Every figure is compared with a baseline measured in the same run; ratio = value / baseline (for latencies, bytes and allocations lower is better; for req/s higher is better). How figures are paired with baselines: internal/benchreport/main.go.\n\n")
	b.WriteString("## Machine\n\n")
	b.WriteString(m.Markdown())
	if o.in == "" {
		fmt.Fprintf(&b, "- command: `%sgo test -run '^$' -bench %s -benchmem -json`%s%s %s\n", benchEnv(), o.bench, flagIf(" -tags ", o.tags), flagIf(" -benchtime ", o.benchtime)+flagIf(" -count ", o.count), strings.Join(o.pkgs, " "))
	}
	if o.count != "" && o.count != "1" {
		fmt.Fprintf(&b, "- figures: each benchmark ran %s times; a figure and its baseline are each the mean over those runs\n", o.count)
	}
	b.WriteString("\n## Results\n\n")
	b.WriteString(Table(rows))
	unpaired, zeroBase := Unpaired(rows)
	fmt.Fprintf(&b, "\n%d figures: %d without a baseline in their package (baseline —), %d whose baseline is 0 (ratio —).\n", len(rows), unpaired, zeroBase)
	if pass, fail := Bars(rows); pass+fail > 0 {
		fmt.Fprintf(&b, "%d figures have a bar: %d pass, %d fail or cannot be judged.\n", pass+fail, pass, fail)
	}
	b.WriteString(failuresMarkdown(failures))
	return b.String()
}

// failuresMarkdown lists failed tests and packages with the last lines of
// their output.
func failuresMarkdown(failures []string) string {
	if len(failures) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n## Failures\n\n```\n")
	for _, f := range failures {
		b.WriteString(f + "\n")
	}
	b.WriteString("```\n")
	return b.String()
}

func flagIf(flag, v string) string {
	if v == "" {
		return ""
	}
	return flag + v
}
