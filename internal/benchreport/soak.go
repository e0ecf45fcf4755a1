package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wsedge/wsedge/internal/benchreport/soakresult"
)

// soakEnv switches the soak tests of e2e on.
const soakEnv = "WSEDGE_SOAK"

// runSoak runs e2e's TestSoak* with the soak switch on and writes what
// they recorded.
func runSoak(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "wsedge-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mach := describeMachine(ctx, o.goBin, time.Now())
	pkgs := o.pkgs
	if len(pkgs) == 0 {
		pkgs = []string{"./e2e/"}
	}
	args := []string{"test", "-run", o.soakRun, "-count=1", "-v", "-json", "-timeout", o.timeout}
	if o.tags != "" {
		args = append(args, "-tags", o.tags)
	}
	args = append(args, pkgs...)
	fmt.Fprintf(os.Stderr, "benchreport: %s=1 %s %s\n", soakEnv, o.goBin, strings.Join(args, " "))
	events, testErr := goTest(ctx, o.goBin, args, []string{soakEnv + "=1", soakresult.OutDirEnv + "=" + dir})
	mach.LoadEnd = loadAvg()
	results, err := soakresult.ReadDir(dir)
	if err != nil {
		return err
	}
	run, err := ParseJSON(bytes.NewReader(events), module, runtime.GOMAXPROCS(0))
	if err != nil {
		return err
	}
	report := soakMarkdown(mach, results, testErr) + failuresMarkdown(run.Failures)
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "benchreport: wrote %s\n", o.out)
	}
	if testErr != nil {
		return testErr
	}
	if len(results) == 0 {
		return fmt.Errorf("the soak tests recorded nothing (is %s honoured?)", soakEnv)
	}
	return nil
}

func mib(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }

// formatResource prints a resource value in its natural unit.
func formatResource(resource string, v float64) string {
	if strings.HasSuffix(resource, "bytes") {
		return mib(v)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func soakMarkdown(m Machine, rs []soakresult.Result, testErr error) string {
	var b strings.Builder
	b.WriteString("# wsedge soak results\n\n")
	b.WriteString("Written by `make soak` (`go run ./internal/benchreport -soak`, running e2e's TestSoak* with WSEDGE_SOAK=1). ")
	b.WriteString("The test process runs the dev primary, authz, the dialer and the dev agent (real Envoy is a separate process); resources are sampled in it and in Envoy. Growth is judged between the `before` sample (after warm-up, load stopped, settled) and the `after` sample (load stopped, connections closed, settled; where sessions churned, also 65 s past the `closed` sample, beyond the tailnet's 60 s TCP TIME-WAIT and a 30 s stats upload), against growth limit = abs + rel × before.\n\n")
	b.WriteString("## Machine\n\n")
	b.WriteString(m.Markdown())
	if testErr != nil {
		fmt.Fprintf(&b, "\n**The soak run failed: %v** (details in the test output).\n", testErr)
	}
	for _, r := range rs {
		verdict := "passed"
		if !r.Passed {
			verdict = "FAILED"
		}
		fmt.Fprintf(&b, "\n## %s — %s\n\n%s\n\n", r.Name, verdict, r.Description)
		fmt.Fprintf(&b, "- duration under load: %s\n", r.Duration.Round(time.Second))
		for _, k := range sortedKeys(r.Counts) {
			fmt.Fprintf(&b, "- %s: %d\n", k, r.Counts[k])
		}
		var nerr int64
		for _, v := range r.Errors {
			nerr += v
		}
		fmt.Fprintf(&b, "- unexpected errors: %d\n", nerr)
		for _, k := range sortedKeys(r.Errors) {
			fmt.Fprintf(&b, "  - %s: %d\n", k, r.Errors[k])
		}
		for _, k := range sortedKeys(r.Figures) {
			fmt.Fprintf(&b, "- %s: %s\n", k, formatValue(r.Figures[k]))
		}
		b.WriteString("\n| resource | before | after | growth | growth limit | verdict |\n|---|---:|---:|---:|---:|---|\n")
		for _, g := range r.Growths() {
			v := "ok"
			if !g.OK {
				v = "**over**"
			}
			limit := formatResource(g.Resource, g.Allowed(g.Before))
			if g.Rel != 0 {
				limit += fmt.Sprintf(" (%s + %.0f%%)", formatResource(g.Resource, g.Abs), 100*g.Rel)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", g.Resource, formatResource(g.Resource, g.Before), formatResource(g.Resource, g.After), formatResource(g.Resource, g.After-g.Before), limit, v)
		}
		b.WriteString("\nSamples:\n\n| t | when | goroutines | Go heap | fds | Envoy fds | Envoy heap |\n|---:|---|---:|---:|---:|---:|---:|\n")
		for _, s := range r.Samples {
			efd, eheap := "—", "—"
			if s.EnvoyFDs >= 0 {
				efd = fmt.Sprint(s.EnvoyFDs)
			}
			if s.EnvoyHeapBytes >= 0 {
				eheap = mib(float64(s.EnvoyHeapBytes))
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %d | %s | %s |\n", s.At.Round(time.Second), s.Label, s.Goroutines, mib(float64(s.HeapBytes)), s.FDs, efd, eheap)
		}
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
