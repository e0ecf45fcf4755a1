// Package soakresult is the record a soak test leaves for `make soak`:
// what ran, how much, what failed, and the process resources sampled
// before, during and after, with the growth limits the soak held itself to.
// The soak tests in e2e write one JSON file per soak into the directory
// named by $WSEDGE_SOAK_OUT; internal/benchreport turns them into
// bench/results/soak.md.
package soakresult

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// OutDirEnv names the directory soak tests write their results to.
const OutDirEnv = "WSEDGE_SOAK_OUT"

// Sample is one look at the resources of the test process (which runs
// authz, the dialer, the dev primary and the dev agent) and of Envoy.
type Sample struct {
	// At is the time since the soak's "before" sample.
	At time.Duration `json:"at"`
	// Label says when: "before", "load", "closed" (load stopped, not yet
	// settled), "after".
	Label      string `json:"label"`
	Goroutines int    `json:"goroutines"`
	// HeapBytes is the live Go heap (HeapAlloc) after a forced GC.
	HeapBytes uint64 `json:"heap_bytes"`
	// FDs is the number of entries in /proc/self/fd.
	FDs int `json:"fds"`
	// EnvoyFDs and EnvoyHeapBytes are Envoy's open files and allocated
	// heap (admin /memory); -1 when unknown.
	EnvoyFDs       int   `json:"envoy_fds"`
	EnvoyHeapBytes int64 `json:"envoy_heap_bytes"`
}

// Limit is the growth a soak tolerates for one resource between its
// "before" and "after" samples: Abs plus Rel times the before value.
type Limit struct {
	Resource string  `json:"resource"`
	Abs      float64 `json:"abs"`
	Rel      float64 `json:"rel"`
}

// Allowed is the largest growth the limit lets through from before.
func (l Limit) Allowed(before float64) float64 { return l.Abs + l.Rel*before }

// Growth is one resource's change across the soak, judged by its limit.
type Growth struct {
	Limit
	Before, After float64
	OK            bool
}

// Result is one soak.
type Result struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Duration    time.Duration `json:"duration"`
	// Counts are the work done ("requests", "websocket sessions",
	// "echoes", ...), Errors the unexpected failures by kind.
	Counts map[string]int64 `json:"counts"`
	Errors map[string]int64 `json:"errors"`
	// Figures are measured values worth reporting ("p99 µs", "req/s").
	Figures map[string]float64 `json:"figures"`
	Samples []Sample           `json:"samples"`
	Limits  []Limit            `json:"limits"`
	// Passed is the test's own verdict.
	Passed bool `json:"passed"`
}

// Value is the resource named r of s.
func (s Sample) Value(r string) (float64, bool) {
	switch r {
	case "goroutines":
		return float64(s.Goroutines), true
	case "heap_bytes":
		return float64(s.HeapBytes), true
	case "fds":
		return float64(s.FDs), true
	case "envoy_fds":
		return float64(s.EnvoyFDs), s.EnvoyFDs >= 0
	case "envoy_heap_bytes":
		return float64(s.EnvoyHeapBytes), s.EnvoyHeapBytes >= 0
	}
	return 0, false
}

// Growths judges the first "before" sample against the last "after"
// sample for each limit. A resource missing from either sample fails.
func (r Result) Growths() []Growth {
	var before, after *Sample
	for i := range r.Samples {
		switch r.Samples[i].Label {
		case "before":
			if before == nil {
				before = &r.Samples[i]
			}
		case "after":
			after = &r.Samples[i]
		}
	}
	var out []Growth
	for _, l := range r.Limits {
		g := Growth{Limit: l}
		if before != nil && after != nil {
			b, okb := before.Value(l.Resource)
			a, oka := after.Value(l.Resource)
			g.Before, g.After = b, a
			g.OK = okb && oka && a-b <= l.Allowed(b)
		}
		out = append(out, g)
	}
	return out
}

// Write stores r as <dir>/<name>.json.
func Write(dir string, r Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("soakresult: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.Name+".json"), b, 0o644); err != nil {
		return fmt.Errorf("soakresult: %w", err)
	}
	return nil
}

// ReadDir reads every result in dir, sorted by name.
func ReadDir(dir string) ([]Result, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("soakresult: %w", err)
	}
	sort.Strings(paths)
	var out []Result
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("soakresult: %w", err)
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("soakresult: %s: %w", filepath.Base(p), err)
		}
		out = append(out, r)
	}
	return out, nil
}
