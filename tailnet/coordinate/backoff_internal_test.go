package coordinate

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	c := &coordination{cfg: config{minBackoff: time.Second, maxBackoff: 30 * time.Second}}
	for attempt, base := range []time.Duration{1, 2, 4, 8, 16, 30, 30, 30} {
		base *= time.Second
		for range 50 {
			d := c.backoff(attempt)
			if d < base*8/10 || d > base*12/10 {
				t.Fatalf("attempt %d: delay %v outside %v±20%%", attempt, d, base)
			}
		}
	}
}
