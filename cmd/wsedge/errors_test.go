package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// packageNames are the names a wsedge error line may carry as prefixes:
// the command and the packages that fail.
var packageNames = []string{"wsedge", "authz", "dialer", "primary", "appurl", "extproc", "envoy", "derp", "tsnode", "coordinate", "tokens", "stack"}

// stutters returns the package names an error line repeats, counting whole
// words (a trailing ':' dropped), so "fetch the primary's build info:
// primary: …" counts primary once and "dialer: dialer: …" twice.
func stutters(line string) []string {
	count := map[string]int{}
	for _, w := range strings.Fields(line) {
		count[strings.TrimSuffix(w, ":")]++
	}
	var out []string
	for _, n := range packageNames {
		if count[n] > 1 {
			out = append(out, n)
		}
	}
	return out
}

func TestStutters(t *testing.T) {
	for line, want := range map[string]string{
		`wsedge authz: authz: authz: appurl: wildcard hostname: invalid wildcard hostname pattern "bad"`:                  "authz",
		`wsedge dialer: dialer: fetch the primary's build info: primary: GET /api/v2/buildinfo: primary unavailable: EOF`: "dialer,primary",
		`wsedge dialer: fetch the primary's build info: primary: GET /api/v2/buildinfo: unavailable: EOF`:                 "",
	} {
		if got := strings.Join(stutters(line), ","); got != want {
			t.Errorf("stutters(%q) = %q, want %q", line, got, want)
		}
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestErrorLineNamesEachPackageOnce runs failing commands and reads the one
// error line each prints: the command names itself once, the package that
// failed names itself once, and wrappers in between add only the action.
func TestErrorLineNamesEachPackageOnce(t *testing.T) {
	unreachable := "http://" + closedPort(t)
	common := []string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--log-level", "error", "--access-url", "http://proxy.localhost:8080"}
	tests := []struct {
		name string
		args []string
		want []string // in the error line, in this order
	}{
		{"dialer with an unreachable primary",
			[]string{"dialer", "--primary-url", unreachable, "--proxy-token", "id:secret"},
			[]string{"wsedge dialer: ", "primary: GET /api/v2/buildinfo: ", "connection refused"}},
		{"authz with a bad wildcard hostname",
			[]string{"authz", "--primary-url", unreachable, "--proxy-token", "id:secret", "--wildcard-hostname", "bad"},
			[]string{"wsedge authz: ", "appurl: ", `"bad"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(append(tt.args, common...), &out, &errb); code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, errb.String())
			}
			var lines []string
			for _, l := range strings.Split(errb.String(), "\n") {
				if strings.HasPrefix(l, "wsedge ") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("%d error lines, want 1; stderr:\n%s", len(lines), errb.String())
			}
			line := lines[0]
			rest := line
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error line %q: no %q (in order %q)", line, w, tt.want)
				}
				rest = rest[i+len(w):]
			}
			if s := stutters(line); len(s) > 0 {
				t.Errorf("error line repeats %q: %s", s, line)
			}
		})
	}
}
