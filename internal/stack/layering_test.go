package stack_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/wsedge/wsedge"

// notProduction are the module's trees that production binaries' service
// code may not depend on: the stand-ins and the harnesses that start them,
// tests, tooling, and cmd/wsedge (whose `dev` command runs the harness).
var notProduction = []string{
	"dev", "internal/devstack", "internal/testutil", "internal/benchreport",
	"e2e", "cmd/wsedge", "deploy", "docs", "envoy/gen",
}

// standIns are what production must never link.
var standIns = []string{"dev", "internal/devstack", "internal/testutil"}

func under(pkg string, roots []string) bool {
	rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	for _, r := range roots {
		if rel == r || strings.HasPrefix(rel, r+"/") {
			return true
		}
	}
	return false
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// Production packages (the composition root included) never depend on a
// stand-in for coderd or the agent, directly or through another package.
func TestProductionNeverLinksTheStandIns(t *testing.T) {
	var prod []string
	for _, p := range goList(t, module+"/...") {
		if !under(p, notProduction) {
			prod = append(prod, p)
		}
	}
	if len(prod) < 10 {
		t.Fatalf("only %d production packages found: %v", len(prod), prod)
	}
	for _, p := range prod {
		for _, dep := range goList(t, "-deps", "-f", "{{.ImportPath}}", p) {
			if strings.HasPrefix(dep, module+"/") && under(dep, standIns) {
				t.Errorf("%s depends on the stand-in or harness %s", p, dep)
			}
		}
	}
}

// Only tailnet/tsnode imports tailscale's engine packages (wgengine,
// magicsock, netstack): everything else sees a node with Dial and peer
// updates.
func TestOnlyTSNodeImportsTheEngine(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}:{{join .Imports ","}}`, module+"/...").Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		for _, imp := range strings.Split(imports, ",") {
			if !strings.HasPrefix(imp, "tailscale.com/wgengine") && !strings.HasPrefix(imp, "tailscale.com/net/tstun") {
				continue
			}
			if pkg != module+"/tailnet/tsnode" {
				t.Errorf("%s imports %s; only tailnet/tsnode may", pkg, imp)
			}
			seen = true
		}
	}
	if !seen {
		t.Fatal("tailnet/tsnode imports no engine package: the check is looking at the wrong thing")
	}
}

// The services behind Envoy share the edge contract through edgewire, not
// through each other: authz, extproc, the dialer and envoy never depend on
// one another (only the composition root puts them together). One
// exception: with Envoy's fast path ext_proc runs only for cross-origin
// requests, so the dialer applies extproc's response policy itself to
// every app response — the same code (extproc.ApplyResponsePolicy), never
// a copy.
func TestEdgeServicesShareOnlyTheContract(t *testing.T) {
	services := []string{"authz", "extproc", "dialer", "envoy"}
	allowed := map[[2]string]bool{{"dialer", "extproc"}: true}
	for _, p := range services {
		deps := goList(t, "-deps", "-f", "{{.ImportPath}}", module+"/"+p)
		sawContract := false
		for _, dep := range deps {
			sawContract = sawContract || dep == module+"/edgewire"
			for _, other := range services {
				if other != p && dep == module+"/"+other && !allowed[[2]string{p, other}] {
					t.Errorf("%s depends on %s; share names through edgewire instead", p, other)
				}
			}
		}
		if !sawContract {
			t.Errorf("%s does not import edgewire: the check is looking at the wrong thing", p)
		}
	}
}
