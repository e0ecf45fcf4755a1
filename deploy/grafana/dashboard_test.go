package grafana

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type target struct {
	Datasource   *datasource `json:"datasource"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	RefID        string      `json:"refId"`
}

type panel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  *datasource     `json:"datasource"`
	GridPos     gridPos         `json:"gridPos"`
	FieldConfig json.RawMessage `json:"fieldConfig"`
	Options     json.RawMessage `json:"options"`
	Targets     []target        `json:"targets"`
	Collapsed   bool            `json:"collapsed"`
	Panels      []panel         `json:"panels"`
}

type variable struct {
	Name    string          `json:"name"`
	Label   string          `json:"label"`
	Type    string          `json:"type"`
	Query   string          `json:"query"`
	Current json.RawMessage `json:"current"`
	Hide    int             `json:"hide"`
	Refresh int             `json:"refresh"`
	Options []any           `json:"options"`
}

type dashboard struct {
	Inputs        []any           `json:"__inputs"`
	Annotations   json.RawMessage `json:"annotations"`
	Description   string          `json:"description"`
	Editable      bool            `json:"editable"`
	GraphTooltip  int             `json:"graphTooltip"`
	ID            *int            `json:"id"`
	Links         []any           `json:"links"`
	Panels        []panel         `json:"panels"`
	Refresh       string          `json:"refresh"`
	SchemaVersion int             `json:"schemaVersion"`
	Tags          []string        `json:"tags"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Time       struct{ From, To string } `json:"time"`
	Timepicker json.RawMessage           `json:"timepicker"`
	Timezone   string                    `json:"timezone"`
	Title      string                    `json:"title"`
	UID        string                    `json:"uid"`
	Version    int                       `json:"version"`
}

// load decodes the dashboard strictly: an unknown or misspelt field fails.
func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("wsedge-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("wsedge-dashboard.json: %v", err)
	}
	if dec.More() {
		t.Fatal("wsedge-dashboard.json: trailing data")
	}
	return d
}

func TestDashboardIsWellFormed(t *testing.T) {
	d := load(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	if len(d.Templating.List) == 0 || d.Templating.List[0].Name != "datasource" || d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != "prometheus" {
		t.Errorf("first variable must be the Prometheus datasource: %+v", d.Templating.List)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: grid position %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		switch p.Type {
		case "row":
			if len(p.Targets) != 0 || p.GridPos.W != 24 {
				t.Errorf("row %q: targets or width %d", p.Title, p.GridPos.W)
			}
			continue
		case "timeseries", "stat":
		default:
			t.Errorf("panel %q: unexpected type %q", p.Title, p.Type)
		}
		if p.Description == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q: no description or no queries", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q %s: datasource %+v", p.Title, tg.RefID, tg.Datasource)
			}
			if err := balanced(tg.Expr); err != "" {
				t.Errorf("panel %q %s: %s in %s", p.Title, tg.RefID, err, tg.Expr)
			}
			if strings.Contains(tg.Expr, "rate(") && !strings.Contains(tg.Expr, "[$__rate_interval]") {
				t.Errorf("panel %q %s: rate without [$__rate_interval]: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
}

// balanced reports unbalanced brackets or quotes in a PromQL expression.
func balanced(expr string) string {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inQuote := false
	for _, r := range expr {
		switch {
		case r == '"':
			inQuote = !inQuote
		case inQuote:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return "unbalanced " + string(r)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote {
		return "unterminated string"
	}
	if len(stack) > 0 {
		return "unclosed " + string(stack[len(stack)-1])
	}
	return ""
}

var (
	metricRE = regexp.MustCompile(`\b(?:wsedge|envoy)_[a-z0-9_]+`)
	// Label matchers and grouping clauses name labels, not metrics.
	labelsRE = regexp.MustCompile(`\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
)

// metricNames are the metric names one PromQL expression reads.
func metricNames(expr string) []string {
	return metricRE.FindAllString(labelsRE.ReplaceAllString(expr, " "), -1)
}

// queried lists the metric names the dashboard's queries use.
func queried(d dashboard) map[string][]string {
	out := map[string][]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricNames(tg.Expr) {
				out[m] = append(out[m], p.Title)
			}
		}
	}
	return out
}

// registered collects the wsedge_* metric names that appear as string
// literals in the module's non-test Go files.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not at %s: %v", root, err)
	}
	lit := regexp.MustCompile(`"(wsedge_[a-z0-9_]+)"`)
	out := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if n := e.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllSubmatch(b, -1) {
			out[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// envoyMetrics reads the names Envoy 1.40 exports with wsedge's bootstrap.
func envoyMetrics(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "envoy-metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out[l] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEveryQueriedMetricExists(t *testing.T) {
	d := load(t)
	code := registered(t)
	envoy := envoyMetrics(t)
	if len(code) < 20 || len(envoy) < 100 {
		t.Fatalf("found only %d wsedge and %d envoy metric names; is the search broken?", len(code), len(envoy))
	}
	q := queried(d)
	for name, panels := range q {
		switch {
		case strings.HasPrefix(name, "envoy_"):
			if !envoy[name] {
				t.Errorf("%s (panels %q) is not a metric Envoy exports with the wsedge bootstrap (testdata/envoy-metrics.txt)", name, panels)
			}
		case code[name]:
		case code[strings.TrimSuffix(name, "_bucket")] || code[strings.TrimSuffix(name, "_count")] || code[strings.TrimSuffix(name, "_sum")]:
		default:
			t.Errorf("%s (panels %q) is not registered anywhere in the code", name, panels)
		}
	}
	// Every component's series are on the dashboard.
	for _, component := range []string{"authz", "extproc", "dialer", "primary", "coordinate", "derp"} {
		found := false
		for name := range q {
			if strings.HasPrefix(name, "wsedge_"+component+"_") {
				found = true
			}
		}
		if !found {
			t.Errorf("no panel queries wsedge_%s_*", component)
		}
	}
	// What operators watch under overload: shed requests, Envoy's
	// overload manager and circuit breakers; and the native-histogram
	// form of the latency histograms (the series without _bucket).
	for _, name := range []string{
		"wsedge_dialer_shed_total",
		"wsedge_authz_check_duration_seconds",
		"wsedge_dialer_request_duration_seconds",
		"envoy_overload_envoy_resource_monitors_fixed_heap_pressure",
		"envoy_overload_envoy_resource_monitors_global_downstream_max_connections_pressure",
		"envoy_cluster_upstream_rq_pending_overflow",
		"envoy_cluster_circuit_breakers_default_rq_open",
	} {
		if q[name] == nil {
			t.Errorf("no panel queries %s", name)
		}
	}
	var unused []string
	for name := range code {
		if !slices.ContainsFunc([]string{"", "_bucket", "_count", "_sum"}, func(s string) bool { return q[name+s] != nil }) {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	t.Logf("registered but not on the dashboard: %v", unused)
}

func TestMetricNames(t *testing.T) {
	got := metricNames(`histogram_quantile(0.99, sum by (le, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="dialer"}[5m]))) / on (x) wsedge_derp_clients`)
	want := []string{"envoy_cluster_upstream_rq_time_bucket", "wsedge_derp_clients"}
	if !slices.Equal(got, want) {
		t.Fatalf("metricNames = %v, want %v", got, want)
	}
}

func TestMetricCheckCatchesTypos(t *testing.T) {
	code := registered(t)
	for _, bad := range []string{"wsedge_authz_check_total", "wsedge_dialer_websocket_active"} {
		if code[bad] {
			t.Fatalf("%s found in the code; the check could not catch that typo", bad)
		}
	}
	if !code["wsedge_authz_checks_total"] || !code["wsedge_primary_request_duration_seconds"] || !code["wsedge_derp_clients"] {
		t.Fatal("known metric names not found in the code")
	}
}
