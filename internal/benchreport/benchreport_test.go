package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/internal/benchreport/soakresult"
)

// events builds a `go test -json` stream: each item is package, test,
// output; the output is split as test2json does (name, then figures).
func events(t *testing.T, items ...[3]string) string {
	t.Helper()
	var b strings.Builder
	for _, it := range items {
		line, err := json.Marshal(map[string]string{"Action": "output", "Package": it[0], "Test": it[1], "Output": it[2]})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

const mod = "github.com/wsedge/wsedge"

func TestParseJSONSplitLinesAndStrayLogs(t *testing.T) {
	in := events(t,
		[3]string{mod + "/tokens", "", "goos: linux\n"},
		[3]string{mod + "/tokens", "BenchmarkVerifyToken/cached", "=== RUN   BenchmarkVerifyToken/cached\n"},
		[3]string{mod + "/tokens", "BenchmarkVerifyToken/cached", "BenchmarkVerifyToken/cached\n"},
		[3]string{mod + "/tokens", "BenchmarkVerifyToken/cached", "BenchmarkVerifyToken/cached-2   \t"},
		[3]string{mod + "/tokens", "BenchmarkVerifyToken/cached", "  1000\t  245.5 ns/op\t  48 B/op\t  1 allocs/op\n"},
		// A log line lands between a name and its figures.
		[3]string{mod + "/e2e", "BenchmarkWholePath1KiB", "BenchmarkWholePath1KiB-2   \t"},
		[3]string{mod + "/e2e", "BenchmarkWholePath1KiB", "\n2026/11/22 tlsdial: warning: self-signed 123 x\n"},
		[3]string{mod + "/e2e", "BenchmarkWholePath1KiB", "     200\t   2250990 ns/op\t  442.1 baseline-p50-µs\t  1687 p50-µs\t 562.6 req/s\n"},
		[3]string{mod, "BenchmarkRoot", "BenchmarkRoot\t 5\t 1e+06 ns/op\n"},
		[3]string{mod + "/e2e", "", "    bench_test.go:258: 12 34 starting\n"},
	)
	run, err := ParseJSON(strings.NewReader(in), mod, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Results) != 3 {
		t.Fatalf("got %d results: %+v", len(run.Results), run.Results)
	}
	r := run.Results[0]
	if r.Key() != "tokens.VerifyToken/cached" || r.Iterations != 1000 {
		t.Errorf("first result %s n=%d", r.Key(), r.Iterations)
	}
	if v, _ := r.Metric("ns/op"); v != 245.5 {
		t.Errorf("ns/op %v", v)
	}
	if v, _ := r.Metric("allocs/op"); v != 1 {
		t.Errorf("allocs/op %v", v)
	}
	w := run.Results[1]
	if w.Key() != "e2e.WholePath1KiB" {
		t.Errorf("second result %s", w.Key())
	}
	if v, _ := w.Metric("baseline-p50-µs"); v != 442.1 {
		t.Errorf("baseline-p50-µs %v", v)
	}
	if v, _ := w.Metric("req/s"); v != 562.6 {
		t.Errorf("req/s %v", v)
	}
	if r := run.Results[2]; r.Pkg != "." || r.Name != "Root" {
		t.Errorf("root package result %q %q", r.Pkg, r.Name)
	}
}

func TestParseJSONFailures(t *testing.T) {
	in := events(t, [3]string{mod + "/e2e", "BenchmarkX", "    x_test.go:1: boom\n"}) +
		`{"Action":"fail","Package":"` + mod + `/e2e","Test":"BenchmarkX"}` + "\n" +
		`{"Action":"fail","Package":"` + mod + `/e2e"}` + "\n" +
		"not json: go build noise\n"
	run, err := ParseJSON(strings.NewReader(in), mod, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Failures) != 1 || !strings.Contains(run.Failures[0], "e2e BenchmarkX failed") || !strings.Contains(run.Failures[0], "boom") {
		t.Fatalf("failures %q", run.Failures)
	}
	if _, err := ParseJSON(strings.NewReader("{broken\n"), mod, 2); err == nil {
		t.Error("a broken event was accepted")
	}
}

func TestTrimProcs(t *testing.T) {
	for _, c := range []struct {
		in    string
		procs int
		want  string
	}{
		{"X-2", 2, "X"},
		{"X/size-1024-2", 2, "X/size-1024"},
		{"X/size-1024", 1, "X/size-1024"},
		{"X-8", 2, "X-8"},
	} {
		if got := trimProcs(c.in, c.procs); got != c.want {
			t.Errorf("trimProcs(%q, %d) = %q, want %q", c.in, c.procs, got, c.want)
		}
	}
}

func res(pkg, name string, ms ...any) Result {
	r := Result{Pkg: pkg, Name: name, Iterations: 1}
	for i := 0; i+1 < len(ms); i += 2 {
		r.Metrics = append(r.Metrics, Metric{Unit: ms[i+1].(string), Value: ms[i].(float64)})
	}
	return r
}

// rowsByFigure indexes rows by "component figure unit".
func rowsByFigure(rows []Row) map[string]Row {
	m := map[string]Row{}
	for _, r := range rows {
		m[r.Component+" "+r.Figure+" "+r.Unit] = r
	}
	return m
}

func TestPair(t *testing.T) {
	rows := Pair([]Result{
		// Rule 1: in-benchmark pairs; ns/op of such a benchmark is left out.
		res("e2e", "WholePath1KiB", 2e6, "ns/op", 442.0, "baseline-p50-µs", 1687.0, "p50-µs", 562.0, "req/s", 2000.0, "baseline-req/s", 3.0, "p99-ratio"),
		// Rule 2: XBaseline for X and for X/sub.
		res("tokens", "VerifyToken/uncached", 5000.0, "ns/op", 4000.0, "B/op"),
		res("tokens", "VerifyToken/cached", 200.0, "ns/op", 48.0, "B/op"),
		res("tokens", "VerifyTokenBaseline", 1000.0, "ns/op", 0.0, "B/op"),
		res("appurl", "ParsePathApp", 600.0, "ns/op"),
		res("appurl", "ParsePathAppBaseline", 150.0, "ns/op"),
		// Rule 2: XBaseline/sub beats XBaseline; sibling "baseline".
		res("primary", "VerifyingKey/hit", 30.0, "ns/op"),
		res("primary", "VerifyingKeyBaseline/hit", 10.0, "ns/op"),
		res("primary", "VerifyingKeyBaseline", 99.0, "ns/op"),
		res("x", "Copy/fast", 2.0, "ns/op"),
		res("x", "Copy/baseline", 1.0, "ns/op"),
		// Legacy names.
		res("dialer", "ProxyGET", 300.0, "ns/op"),
		res("dialer", "DirectGET", 100.0, "ns/op"),
		res("authz", "CheckWarmCookie", 9.0, "ns/op", 120.0, "authz-p50-µs", 100.0, "noop-p50-µs", 1.2, "p99-ratio"),
		res("e2e", "ExtProcHop", 9.0, "ns/op", 930.0, "p50-extproc-µs", 680.0, "p50-no-extproc-µs", 250.0, "p50-added-µs", 36.0, "p50-added-%"),
		// One baseline serving two figures.
		res("tailnet/tsnode", "TailnetDERP/BulkDownload", 40.0, "MB/s"),
		res("tailnet/tsnode", "TailnetDirectUDP/BulkDownload", 80.0, "MB/s"),
		res("tailnet/tsnode", "LoopbackTCP/BulkDownload", 800.0, "MB/s"),
		// Rule 3: no baseline at all, still listed.
		res("tailnet/coordinate", "TunnelReady", 7e5, "ns/op"),
		res("e2e", "WholePathIdleWebsocket", 120000.0, "B/session", 25000.0, "baseline-B/session", 95000.0, "proxy-B/session"),
	})
	m := rowsByFigure(rows)
	check := func(key, base string, value, baseValue float64) {
		t.Helper()
		r, ok := m[key]
		if !ok {
			t.Errorf("no row %q", key)
			return
		}
		if r.BaseName != base || r.Value != value || r.BaseValue != baseValue {
			t.Errorf("%s: %v vs %q = %v, want %v vs %q = %v", key, r.Value, r.BaseName, r.BaseValue, value, base, baseValue)
		}
	}
	check("e2e WholePath1KiB p50-µs", "WholePath1KiB baseline-p50-µs", 1687, 442)
	check("e2e WholePath1KiB req/s", "WholePath1KiB baseline-req/s", 562, 2000)
	check("tokens VerifyToken/uncached ns/op", "VerifyTokenBaseline", 5000, 1000)
	check("tokens VerifyToken/cached B/op", "VerifyTokenBaseline", 48, 0)
	check("appurl ParsePathApp ns/op", "ParsePathAppBaseline", 600, 150)
	check("primary VerifyingKey/hit ns/op", "VerifyingKeyBaseline/hit", 30, 10)
	check("x Copy/fast ns/op", "Copy/baseline", 2, 1)
	check("dialer ProxyGET ns/op", "DirectGET", 300, 100)
	check("authz CheckWarmCookie authz-p50-µs", "CheckWarmCookie noop-p50-µs", 120, 100)
	check("e2e ExtProcHop p50-extproc-µs", "ExtProcHop p50-no-extproc-µs", 930, 680)
	check("tailnet/coordinate TunnelReady ns/op", "", 7e5, 0)
	check("tailnet/tsnode TailnetDERP/BulkDownload MB/s", "LoopbackTCP/BulkDownload", 40, 800)
	check("tailnet/tsnode TailnetDirectUDP/BulkDownload MB/s", "LoopbackTCP/BulkDownload", 80, 800)
	check("e2e WholePathIdleWebsocket B/session", "WholePathIdleWebsocket baseline-B/session", 120000, 25000)
	check("e2e WholePathIdleWebsocket proxy-B/session", "", 95000, 0)
	// An unused baseline is still a figure.
	check("primary VerifyingKeyBaseline ns/op", "", 99, 0)
	for _, gone := range []string{
		"e2e WholePath1KiB ns/op", "e2e WholePath1KiB p99-ratio", "e2e WholePath1KiB baseline-p50-µs",
		"tokens VerifyTokenBaseline ns/op", "appurl ParsePathAppBaseline ns/op", "primary VerifyingKeyBaseline/hit ns/op",
		"x Copy/baseline ns/op", "dialer DirectGET ns/op", "tailnet/tsnode LoopbackTCP/BulkDownload MB/s", "authz CheckWarmCookie noop-p50-µs", "authz CheckWarmCookie ns/op",
		"e2e ExtProcHop p50-added-µs", "e2e ExtProcHop p50-added-%", "e2e ExtProcHop p50-no-extproc-µs",
	} {
		if _, ok := m[gone]; ok {
			t.Errorf("row %q should not be listed", gone)
		}
	}
	if len(rows) != 18 {
		t.Errorf("%d rows, want 18:\n%s", len(rows), Table(rows))
	}
	if u, z := Unpaired(rows); u != 3 || z != 2 {
		t.Errorf("Unpaired = %d, %d; want 3 without a baseline, 2 with a zero one", u, z)
	}
	if q, ok := m["tokens VerifyToken/cached B/op"].Ratio(); ok {
		t.Errorf("ratio against a zero baseline: %v", q)
	}
	if q, _ := m["appurl ParsePathApp ns/op"].Ratio(); q != 4 {
		t.Errorf("ratio %v, want 4", q)
	}
}

func TestMergeAveragesRepeatedRuns(t *testing.T) {
	got := Merge([]Result{
		res("a", "X", 100.0, "ns/op"), res("a", "Y", 5.0, "ns/op"), res("a", "X", 200.0, "ns/op"), res("a", "X", 300.0, "ns/op"),
	})
	if len(got) != 2 || got[0].Name != "X" || got[1].Name != "Y" {
		t.Fatalf("merged %+v", got)
	}
	if v, _ := got[0].Metric("ns/op"); v != 200 {
		t.Errorf("mean ns/op %v, want 200", v)
	}
	// A figure only some runs report is the mean over those runs.
	got = Merge([]Result{
		res("e2e", "Z", 10.0, "req/s", 1000.0, "ws-B/session"), res("e2e", "Z", 20.0, "req/s"), res("e2e", "Z", 30.0, "req/s", 3000.0, "ws-B/session"),
	})
	if v, _ := got[0].Metric("req/s"); v != 20 {
		t.Errorf("mean req/s %v, want 20", v)
	}
	if v, _ := got[0].Metric("ws-B/session"); v != 2000 {
		t.Errorf("ws-B/session %v, want 2000, the mean of the two runs that reported it", v)
	}
}

// TestSkippedBenchmarkIsNoResult: go test prints a line of zeros (and NaN
// ns/op) for a skipped benchmark; it is no result.
func TestSkippedBenchmarkIsNoResult(t *testing.T) {
	var pending string
	if r, ok := parseLine("BenchmarkWarmPathVsReference/idle-websocket-2         \t       0\t               NaN ns/op\t       0 B/op\t       0 allocs/op", &pending); ok {
		t.Errorf("skipped benchmark parsed as %+v", r)
	}
	if _, ok := parseLine("BenchmarkX-2   \t 10\t 5.0 ns/op", &pending); !ok {
		t.Error("a result line was not parsed")
	}
}

func TestTable(t *testing.T) {
	out := Table([]Row{
		{Component: "appurl", Figure: "ParsePathApp", Unit: "ns/op", Value: 614.6, BaseName: "ParsePathAppBaseline", BaseValue: 153.65},
		{Component: "tailnet/coordinate", Figure: "TunnelReady", Unit: "ns/op", Value: 712345},
	})
	want := "| component | figure | value | baseline | ratio |\n" +
		"|---|---|---:|---|---:|\n" +
		"| appurl | ParsePathApp ns/op | 614.6 | ParsePathAppBaseline = 153.7 | 4.00× |\n" +
		"| tailnet/coordinate | TunnelReady ns/op | 712345 | — | — |\n"
	if out != want {
		t.Errorf("table:\n%s\nwant:\n%s", out, want)
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.01234: "0.0123", 2.5: "2.50", 153.65: "153.7", 12345.6: "12346", -3: "-3.00"} {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSoakMarkdown(t *testing.T) {
	r := soakresult.Result{
		Name: "TestSoakWebsockets", Description: "1,000 sessions.", Duration: 61 * time.Second,
		Counts: map[string]int64{"echoes while held": 6000}, Errors: map[string]int64{"echo: EOF": 2},
		Samples: []soakresult.Sample{
			{Label: "before", Goroutines: 100, HeapBytes: 64 << 20, FDs: 40, EnvoyFDs: 30, EnvoyHeapBytes: 8 << 20},
			{At: 70 * time.Second, Label: "after", Goroutines: 180, HeapBytes: 64 << 20, FDs: 40, EnvoyFDs: 30, EnvoyHeapBytes: 8 << 20},
		},
		Limits: []soakresult.Limit{{Resource: "goroutines", Abs: 30}, {Resource: "heap_bytes", Abs: 8 << 20, Rel: 0.25}},
	}
	out := soakMarkdown(Machine{CPU: "AMD EPYC", Cores: 2}, []soakresult.Result{r}, nil)
	for _, want := range []string{
		"## TestSoakWebsockets — FAILED",
		"- duration under load: 1m1s",
		"- echoes while held: 6000",
		"- unexpected errors: 2\n  - echo: EOF: 2",
		"| goroutines | 100 | 180 | 80 | 30 | **over** |",
		"| heap_bytes | 64.0 MiB | 64.0 MiB | 0.0 MiB | 24.0 MiB (8.0 MiB + 25%) | ok |",
		"| 1m10s | after | 180 | 64.0 MiB | 40 | 30 | 8.0 MiB |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("soak report lacks %q:\n%s", want, out)
		}
	}
}

func TestProgressShowsResultsAndVerdicts(t *testing.T) {
	in := events(t,
		[3]string{mod + "/appurl", "BenchmarkX", "=== RUN   BenchmarkX\n"},
		[3]string{mod + "/appurl", "BenchmarkX", "BenchmarkX-2   \t"},
		[3]string{mod + "/appurl", "BenchmarkX", "  100\t  1630 ns/op\n"},
		[3]string{mod + "/e2e", "TestSoakMixed", "    soak_test.go:333: soak: before t=0s goroutines 168\n"},
		[3]string{mod + "/e2e", "TestSoakMixed", "    soak_test.go:40: chatter\n"},
		[3]string{mod + "/e2e", "", "--- FAIL: TestSoakMixed (53.33s)\n"},
		[3]string{mod + "/appurl", "", "ok  \tgithub.com/wsedge/wsedge/appurl\t0.015s\n"},
	)
	var out strings.Builder
	progress(strings.NewReader(in), &out)
	want := "BenchmarkX-2   \t  100\t  1630 ns/op\n" +
		"    soak_test.go:333: soak: before t=0s goroutines 168\n" +
		"--- FAIL: TestSoakMixed (53.33s)\n" +
		"ok  \tgithub.com/wsedge/wsedge/appurl\t0.015s\n"
	if out.String() != want {
		t.Errorf("progress:\n%q\nwant:\n%q", out.String(), want)
	}
}

func TestBars(t *testing.T) {
	rows := Pair([]Result{
		res("e2e", "WarmPathVsReference/c=1", 1.0, "ns/op",
			900.0, "req/s", 1000.0, "baseline-req/s", 1.0, "bar-ratio-min-req/s",
			1050.0, "p50-µs", 1000.0, "baseline-p50-µs", 1.1, "bar-ratio-max-p50-µs",
			300.0, "cpu-µs/req", 0.0, "baseline-cpu-µs/req", 1.0, "bar-ratio-max-cpu-µs/req",
			70000.0, "ws-B/session", 65536.0, "bar-max-ws-B/session",
			5.0, "authz-cpu-µs/req"),
	})
	byFig := rowsByFigure(rows)
	if len(rows) != 5 {
		t.Fatalf("rows %+v (bars are not figures)", rows)
	}
	for _, c := range []struct {
		unit         string
		pass, judged bool
		bar          string
	}{
		{"req/s", false, true, "≥ 1.00×"},
		{"p50-µs", true, true, "≤ 1.10×"},
		{"cpu-µs/req", false, false, "≤ 1.00×"},
		{"ws-B/session", false, true, "≤ 65536"},
	} {
		r, ok := byFig["e2e WarmPathVsReference/c=1 "+c.unit]
		if !ok || r.Bar == nil {
			t.Fatalf("%s: no row with a bar: %+v", c.unit, r)
		}
		pass, judged := r.Check()
		if pass != c.pass || judged != c.judged || r.Bar.String() != c.bar {
			t.Errorf("%s: bar %s pass %v judged %v, want %s %v %v", c.unit, r.Bar, pass, judged, c.bar, c.pass, c.judged)
		}
	}
	if r := byFig["e2e WarmPathVsReference/c=1 authz-cpu-µs/req"]; r.Bar != nil {
		t.Errorf("authz-cpu-µs/req has bar %v", r.Bar)
	}
	if pass, fail := Bars(rows); pass != 1 || fail != 3 {
		t.Errorf("Bars = %d pass, %d fail; want 1, 3", pass, fail)
	}
	tab := Table(rows)
	for _, want := range []string{"| ratio | bar |", "| 0.90× | ≥ 1.00× **FAIL** |", "| 1.05× | ≤ 1.10× pass |", "≤ 1.00× (no ratio)", "| ≤ 65536 **FAIL** |"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	if strings.Contains(Table(Pair([]Result{res("x", "Y", 1.0, "ns/op")})), "bar") {
		t.Error("a table without bars has a bar column")
	}
}

// TestMarkdownSaysHowManyRuns: a report of repeated runs says so, and its
// command line carries -count, so that a mean is never read as one run.
func TestMarkdownSaysHowManyRuns(t *testing.T) {
	rows := []Row{{Component: "e2e", Figure: "X", Unit: "req/s", Value: 2, BaseName: "X baseline", BaseValue: 1}}
	out := benchMarkdown(Machine{}, options{bench: "X", benchtime: "5s", count: "3", pkgs: []string{"./e2e/"}}, rows, nil)
	if !strings.Contains(out, "-benchtime 5s -count 3 ./e2e/") || !strings.Contains(out, "each benchmark ran 3 times") {
		t.Errorf("report of -count 3 runs:\n%s", out)
	}
	out = benchMarkdown(Machine{}, options{bench: "X", pkgs: []string{"./e2e/"}}, rows, nil)
	if strings.Contains(out, "-count") || strings.Contains(out, "ran ") {
		t.Errorf("report of one run mentions repetitions:\n%s", out)
	}
}
