package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a run happened.
type Machine struct {
	CPU        string
	Cores      int
	GOMAXPROCS int
	Kernel     string
	Go         string
	Envoy      string
	Commit     string
	Date       time.Time
	LoadStart  string
	LoadEnd    string
}

// describeMachine reads /proc, `go env GOVERSION`, `envoy --version` (the
// binary in $WSEDGE_ENVOY_BIN, else .tools/bin/envoy) and git.
func describeMachine(ctx context.Context, goBin string, now time.Time) Machine {
	m := Machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Date: now.UTC(), CPU: "unknown", LoadStart: loadAvg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	m.Go = firstLine(ctx, goBin, "env", "GOVERSION")
	envoy := os.Getenv("WSEDGE_ENVOY_BIN")
	if envoy == "" {
		envoy = ".tools/bin/envoy"
	}
	if v := firstLine(ctx, envoy, "--version"); v != "" {
		m.Envoy = v
		// "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
		if _, after, ok := strings.Cut(v, "version:"); ok {
			m.Envoy = strings.TrimSpace(after)
		}
	}
	m.Commit = firstLine(ctx, "git", "describe", "--always", "--dirty")
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func firstLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// Markdown is the machine as a bullet list.
func (m Machine) Markdown() string {
	or := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	return fmt.Sprintf(`- date: %s
- CPU: %s, %d cores (GOMAXPROCS %d)
- kernel: %s
- Go: %s
- Envoy: %s
- commit: %s
- load average (1, 5, 15 min) at start: %s; at end: %s
`, m.Date.Format(time.RFC3339), m.CPU, m.Cores, m.GOMAXPROCS, or(m.Kernel), or(m.Go), or(m.Envoy), or(m.Commit), m.LoadStart, or(m.LoadEnd))
}
