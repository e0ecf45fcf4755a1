package soakresult

import (
	"testing"
	"time"
)

func TestGrowths(t *testing.T) {
	r := Result{
		Name: "TestSoakX",
		Samples: []Sample{
			{Label: "before", Goroutines: 100, HeapBytes: 10 << 20, FDs: 50, EnvoyFDs: 30, EnvoyHeapBytes: -1},
			{Label: "load", Goroutines: 2000, HeapBytes: 90 << 20, FDs: 2050, EnvoyFDs: 2030, EnvoyHeapBytes: 5},
			{Label: "after", Goroutines: 131, HeapBytes: 12 << 20, FDs: 70, EnvoyFDs: 51, EnvoyHeapBytes: 5},
		},
		Limits: []Limit{
			{Resource: "goroutines", Abs: 30},                // +31: over
			{Resource: "heap_bytes", Abs: 1 << 20, Rel: 0.1}, // +2 MiB ≤ 1 + 1 MiB: ok
			{Resource: "fds", Abs: 20},                       // +20: ok (the limit is inclusive)
			{Resource: "envoy_fds", Abs: 20, Rel: 0.05},      // +21 ≤ 20 + 1.5: ok
			{Resource: "envoy_heap_bytes", Abs: 1 << 30},     // unknown before: fails
			{Resource: "nonsense", Abs: 1},
		},
	}
	want := map[string]bool{"goroutines": false, "heap_bytes": true, "fds": true, "envoy_fds": true, "envoy_heap_bytes": false, "nonsense": false}
	gs := r.Growths()
	if len(gs) != len(want) {
		t.Fatalf("%d growths", len(gs))
	}
	for _, g := range gs {
		if g.OK != want[g.Resource] {
			t.Errorf("%s: %v → %v (allowed %v): ok=%v, want %v", g.Resource, g.Before, g.After, g.Allowed(g.Before), g.OK, want[g.Resource])
		}
	}
	if gs[0].Before != 100 || gs[0].After != 131 {
		t.Errorf("goroutines judged %v → %v, want the before and after samples, not the load one", gs[0].Before, gs[0].After)
	}
}

func TestGrowthsWithoutAfterSampleFail(t *testing.T) {
	r := Result{Samples: []Sample{{Label: "before"}}, Limits: []Limit{{Resource: "fds", Abs: 100}}}
	if g := r.Growths(); len(g) != 1 || g[0].OK {
		t.Errorf("a soak without an after sample passed: %+v", g)
	}
}

func TestWriteReadDir(t *testing.T) {
	dir := t.TempDir()
	in := Result{Name: "TestSoakB", Duration: time.Minute, Counts: map[string]int64{"requests": 12000}, Passed: true,
		Samples: []Sample{{At: 3 * time.Second, Label: "before", Goroutines: 7, EnvoyFDs: -1}}}
	if err := Write(dir, in); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, Result{Name: "TestSoakA"}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "TestSoakA" || got[1].Name != "TestSoakB" {
		t.Fatalf("read %+v", got)
	}
	b := got[1]
	if b.Duration != time.Minute || b.Counts["requests"] != 12000 || !b.Passed || b.Samples[0].At != 3*time.Second || b.Samples[0].EnvoyFDs != -1 {
		t.Errorf("round trip: %+v", b)
	}
}
