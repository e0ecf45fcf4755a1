package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Metric is one figure of a benchmark result line: value and unit.
type Metric struct {
	Unit  string
	Value float64
}

// Result is one benchmark's result line.
type Result struct {
	// Pkg is the package path relative to the module ("e2e",
	// "tailnet/tsnode"; "." for the root).
	Pkg string
	// Name is the benchmark's full name without the "Benchmark" prefix
	// and without the -GOMAXPROCS suffix ("VerifyToken/cached").
	Name       string
	Iterations int64
	Metrics    []Metric
}

// Key is how results and pairs are named: "pkg.Name".
func (r Result) Key() string { return r.Pkg + "." + r.Name }

// Metric is the value of unit, if reported.
func (r Result) Metric(unit string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Unit == unit {
			return m.Value, true
		}
	}
	return 0, false
}

// Run is what one `go test -json` benchmark run produced.
type Run struct {
	Results []Result
	// Failures are packages or benchmarks that failed, with the last
	// lines of their output.
	Failures []string
}

// testEvent is the subset of test2json's events we read.
type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

var (
	// benchName is a benchmark's name as printed before its results.
	benchName = regexp.MustCompile(`^(Benchmark\S+)`)
	// benchFigures is "<iterations> <value> <unit> [<value> <unit>]...".
	benchFigures = regexp.MustCompile(`^\s*(\d+)((?:\s+[-+0-9.eE]+\s+\S+)+)\s*$`)
)

// ParseJSON reads `go test -json -bench` output. module is the module
// path stripped from package paths; procs is the GOMAXPROCS the run used
// (its -N suffix is removed from names when procs > 1). Output text of a
// package is put back together before parsing, because test2json splits
// a result line after the benchmark name, and stray log lines written
// between a name and its figures are skipped.
func ParseJSON(r io.Reader, module string, procs int) (Run, error) {
	var run Run
	type pkgState struct {
		buf     strings.Builder
		pending string
		tail    []string
		// testFailed: a test of the package failed (listed on its own).
		testFailed bool
	}
	states := map[string]*pkgState{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // go build chatter when not all of it is JSON
		}
		var ev testEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return run, fmt.Errorf("benchreport: test event %.80q: %w", line, err)
		}
		st := states[ev.Package]
		if st == nil {
			st = &pkgState{}
			states[ev.Package] = st
		}
		switch ev.Action {
		case "output":
			st.buf.WriteString(ev.Output)
			for {
				s := st.buf.String()
				i := strings.IndexByte(s, '\n')
				if i < 0 {
					break
				}
				text := s[:i]
				st.buf.Reset()
				st.buf.WriteString(s[i+1:])
				if keepInTail(text) {
					st.tail = append(st.tail, text)
					if len(st.tail) > 20 {
						st.tail = st.tail[1:]
					}
				}
				if res, ok := parseLine(text, &st.pending); ok {
					res.Pkg = relPkg(ev.Package, module)
					res.Name = trimProcs(strings.TrimPrefix(res.Name, "Benchmark"), procs)
					run.Results = append(run.Results, res)
				}
			}
		case "fail":
			what := relPkg(ev.Package, module)
			if ev.Test != "" {
				what += " " + ev.Test
				st.testFailed = true
			} else if st.testFailed {
				continue // its failed tests are listed already
			}
			run.Failures = append(run.Failures, what+" failed:\n    "+strings.Join(st.tail, "\n    "))
		}
	}
	if err := sc.Err(); err != nil {
		return run, fmt.Errorf("benchreport: reading test events: %w", err)
	}
	return run, nil
}

// parseLine recognizes a result line, whole or split: a name alone is
// remembered in pending until a line of figures follows.
func parseLine(text string, pending *string) (Result, bool) {
	name := ""
	rest := text
	if m := benchName.FindStringSubmatch(text); m != nil {
		name, rest = m[1], text[len(m[1]):]
		*pending = name
	} else if *pending != "" {
		name = *pending
	}
	if name == "" {
		return Result{}, false
	}
	f := benchFigures.FindStringSubmatch(rest)
	if f == nil {
		return Result{}, false
	}
	*pending = ""
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n == 0 {
		// n == 0: the benchmark was skipped (go test still prints a line
		// of zeros and NaN for it).
		return Result{}, false
	}
	fields := strings.Fields(f[2])
	res := Result{Name: name, Iterations: n}
	for i := 0; i+1 < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return Result{}, false
		}
		res.Metrics = append(res.Metrics, Metric{Unit: fields[i+1], Value: v})
	}
	return res, true
}

func relPkg(pkg, module string) string {
	if pkg == module {
		return "."
	}
	return strings.TrimPrefix(pkg, module+"/")
}

// trimProcs removes the "-N" the testing package appends to a name when
// GOMAXPROCS is N > 1.
func trimProcs(name string, procs int) string {
	if procs <= 1 {
		return name
	}
	return strings.TrimSuffix(name, "-"+strconv.Itoa(procs))
}

// Merge averages the figures of results that share a key (from -count
// > 1), keeping the order of first appearance. A figure is the mean over
// the runs that reported it.
func Merge(rs []Result) []Result {
	var out []Result
	idx := map[string]int{}
	counts := map[string]int{} // key + "\x00" + unit → runs that reported it
	for _, r := range rs {
		k := r.Key()
		i, ok := idx[k]
		if !ok {
			idx[k] = len(out)
			r.Metrics = append([]Metric(nil), r.Metrics...)
			for _, m := range r.Metrics {
				counts[k+"\x00"+m.Unit] = 1
			}
			out = append(out, r)
			continue
		}
		o := &out[i]
		o.Iterations += r.Iterations
		for j := range o.Metrics {
			if v, ok := r.Metric(o.Metrics[j].Unit); ok {
				ck := k + "\x00" + o.Metrics[j].Unit
				counts[ck]++
				o.Metrics[j].Value += (v - o.Metrics[j].Value) / float64(counts[ck])
			}
		}
	}
	return out
}

// keepInTail leaves out of failure excerpts the lines that say nothing
// about the failure: blank ones and upstream tailscale's std-log chatter.
func keepInTail(line string) bool {
	return strings.TrimSpace(line) != "" && !strings.Contains(line, "tlsdial: warning:") && !strings.HasPrefix(line, "=== ")
}
