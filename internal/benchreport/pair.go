package main

import (
	"strconv"
	"strings"
)

// Row is one line of the table: a figure and the baseline it is compared
// with. BaseName is empty when the figure has no baseline.
type Row struct {
	Component string
	Figure    string
	Unit      string
	Value     float64
	BaseName  string
	BaseValue float64
	// Bar, if set, is the limit the figure is judged by.
	Bar *Bar
}

// Bar is a limit a benchmark reports for one of its figures, as a metric
// `bar-ratio-min-<unit>` (value / baseline at least Limit),
// `bar-ratio-max-<unit>` (at most Limit), `bar-min-<unit>` or
// `bar-max-<unit>` (the value itself at least or at most Limit).
type Bar struct {
	Limit float64
	// Ratio: the limit is on value / baseline; Max: an upper limit.
	Ratio, Max bool
}

// barPrefixes are the metric prefixes of bars.
var barPrefixes = []struct {
	prefix     string
	ratio, max bool
}{
	{"bar-ratio-min-", true, false},
	{"bar-ratio-max-", true, true},
	{"bar-min-", false, false},
	{"bar-max-", false, true},
}

// barOf is the bar unit names, if it is one, and the unit it limits.
func barOf(unit string, limit float64) (string, Bar, bool) {
	for _, p := range barPrefixes {
		if u, ok := strings.CutPrefix(unit, p.prefix); ok {
			return u, Bar{Limit: limit, Ratio: p.ratio, Max: p.max}, true
		}
	}
	return "", Bar{}, false
}

// String is the bar as the table shows it: "≥ 1.00×", "≤ 65536".
func (b Bar) String() string {
	op := "≥"
	if b.Max {
		op = "≤"
	}
	if b.Ratio {
		return op + " " + strconv.FormatFloat(b.Limit, 'f', 2, 64) + "×"
	}
	return op + " " + formatValue(b.Limit)
}

// Check judges the row against its bar; ok is false when the row has no
// bar, or a ratio bar and no ratio.
func (r Row) Check() (pass, ok bool) {
	if r.Bar == nil {
		return false, false
	}
	v := r.Value
	if r.Bar.Ratio {
		q, has := r.Ratio()
		if !has {
			return false, false
		}
		v = q
	}
	if r.Bar.Max {
		return v <= r.Bar.Limit, true
	}
	return v >= r.Bar.Limit, true
}

// Ratio is Value / BaseValue; ok is false without a usable baseline.
func (r Row) Ratio() (float64, bool) {
	if r.BaseName == "" || r.BaseValue == 0 {
		return 0, false
	}
	return r.Value / r.BaseValue, true
}

// legacyBenchBaselines pairs benchmarks named before the convention
// (keys and values are Result keys, "pkg.Name").
var legacyBenchBaselines = map[string]string{
	"dialer.ProxyGET":             "dialer.DirectGET",
	"authz.CheckThroughput/authz": "authz.CheckThroughput/noop",
	"extproc.Process/policy":      "extproc.Process/noop",
	// The tailnet against plain loopback TCP to the same apps.
	"tailnet/tsnode.TailnetDERP/BulkDownload":            "tailnet/tsnode.LoopbackTCP/BulkDownload",
	"tailnet/tsnode.TailnetDERP/WebsocketRoundTrip":      "tailnet/tsnode.LoopbackTCP/WebsocketRoundTrip",
	"tailnet/tsnode.TailnetDirectUDP/BulkDownload":       "tailnet/tsnode.LoopbackTCP/BulkDownload",
	"tailnet/tsnode.TailnetDirectUDP/WebsocketRoundTrip": "tailnet/tsnode.LoopbackTCP/WebsocketRoundTrip",
}

// legacyMetricBaselines pairs metrics within one benchmark named before
// the convention: benchmark key → figure unit → baseline unit.
var legacyMetricBaselines = map[string]map[string]string{
	"authz.CheckWarmCookie": {
		"authz-p50-µs": "noop-p50-µs",
		"authz-p99-µs": "noop-p99-µs",
	},
	"e2e.ExtProcHop": {
		"p50-extproc-µs":      "p50-no-extproc-µs",
		"p50-noop-extproc-µs": "p50-no-extproc-µs",
	},
}

// baselinePrefix marks the in-benchmark baseline of a metric.
const baselinePrefix = "baseline-"

// standardUnits are the figures the testing package reports for every
// benchmark; they time or count a whole iteration.
var standardUnits = map[string]bool{"ns/op": true, "B/op": true, "allocs/op": true, "MB/s": true}

// derived reports metrics that are already a comparison the benchmark
// computed (a ratio, a percentage, an "added" difference); the table
// computes its own.
func derived(unit string) bool {
	return strings.HasSuffix(unit, "-ratio") || strings.HasSuffix(unit, "-%") || strings.Contains(unit, "-added-")
}

// isBaselineName reports a benchmark that is a baseline by its name.
func isBaselineName(name string) bool {
	top, sub, hasSub := strings.Cut(name, "/")
	if strings.HasSuffix(top, "Baseline") {
		return true
	}
	return hasSub && lastElem(sub) == "baseline"
}

func lastElem(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// benchBaseline finds the benchmark-level baseline of r among byKey.
func benchBaseline(r Result, byKey map[string]Result) (Result, bool) {
	if k, ok := legacyBenchBaselines[r.Key()]; ok {
		b, ok := byKey[k]
		return b, ok
	}
	if isBaselineName(r.Name) {
		return Result{}, false
	}
	top, sub, hasSub := strings.Cut(r.Name, "/")
	var candidates []string
	if hasSub {
		candidates = append(candidates, top+"Baseline/"+sub, top+"Baseline")
		if i := strings.LastIndexByte(r.Name, '/'); i >= 0 {
			candidates = append(candidates, r.Name[:i]+"/baseline")
		}
	} else {
		candidates = append(candidates, top+"Baseline")
	}
	for _, c := range candidates {
		if b, ok := byKey[r.Pkg+"."+c]; ok && c != r.Name {
			return b, true
		}
	}
	return Result{}, false
}

// Pair turns results into table rows by these rules, in this order:
//
//  1. In-benchmark pairs: a metric `baseline-<unit>` is the baseline of
//     the metric `<unit>` of the same benchmark (plus the legacy pairs of
//     legacyMetricBaselines). A benchmark with such pairs contributes
//     those rows and its other custom metrics; its ns/op, B/op and
//     allocs/op are left out, since an iteration times both sides.
//  2. Baseline benchmarks: `BenchmarkXBaseline/sub`, else
//     `BenchmarkXBaseline`, is the baseline of `BenchmarkX/sub`;
//     `BenchmarkXBaseline` is that of `BenchmarkX`; a sub-benchmark named
//     `baseline` is that of its siblings (plus legacyBenchBaselines).
//     Every metric both report is paired.
//  3. Whatever is left has no baseline and is still listed, so the table
//     holds every figure. Baselines that served as one are not rows;
//     derived metrics (`*-ratio`, `*-%`) are dropped.
//
// A metric `bar-ratio-min-<unit>`, `bar-ratio-max-<unit>`,
// `bar-min-<unit>` or `bar-max-<unit>` is not a row but the bar of the
// figure `<unit>` of the same benchmark (Bar, Row.Check).
func Pair(rs []Result) []Row {
	byKey := map[string]Result{}
	for _, r := range rs {
		byKey[r.Key()] = r
	}
	usedAsBaseline := map[string]bool{}
	type pending struct {
		r        Result
		base     Result
		hasBase  bool
		inBench  map[string]string // unit → baseline unit
		consumed map[string]bool   // baseline and bar units used
		bars     map[string]Bar    // unit → its bar
	}
	var ps []pending
	for _, r := range rs {
		p := pending{r: r, inBench: map[string]string{}, consumed: map[string]bool{}, bars: map[string]Bar{}}
		legacy := legacyMetricBaselines[r.Key()]
		for _, m := range r.Metrics {
			if u, bar, ok := barOf(m.Unit, m.Value); ok {
				p.bars[u] = bar
				p.consumed[m.Unit] = true
				continue
			}
			if strings.HasPrefix(m.Unit, baselinePrefix) {
				continue
			}
			bu, ok := legacy[m.Unit]
			if !ok {
				bu = baselinePrefix + m.Unit
			}
			if _, has := r.Metric(bu); has {
				p.inBench[m.Unit] = bu
				p.consumed[bu] = true
			}
		}
		if b, ok := benchBaseline(r, byKey); ok {
			p.base, p.hasBase = b, true
			usedAsBaseline[b.Key()] = true
		}
		ps = append(ps, p)
	}
	var rows []Row
	for _, p := range ps {
		r := p.r
		if usedAsBaseline[r.Key()] {
			continue
		}
		for _, m := range r.Metrics {
			if derived(m.Unit) || p.consumed[m.Unit] {
				continue
			}
			row := Row{Component: r.Pkg, Figure: r.Name, Unit: m.Unit, Value: m.Value}
			if bar, ok := p.bars[m.Unit]; ok {
				row.Bar = &bar
			}
			switch bu, ok := p.inBench[m.Unit]; {
			case ok:
				row.BaseName = r.Name + " " + bu
				row.BaseValue, _ = r.Metric(bu)
			case p.hasBase:
				if v, ok := p.base.Metric(m.Unit); ok {
					row.BaseName = p.base.Name
					row.BaseValue = v
				}
			case len(p.inBench) > 0 && standardUnits[m.Unit]:
				continue // rule 1: an iteration times both sides
			}
			rows = append(rows, row)
		}
	}
	return rows
}
