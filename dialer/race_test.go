//go:build race

package dialer

// raceEnabled: the race detector's sync.Pool drops a share of what is
// put back, so allocation budgets do not hold under it.
const raceEnabled = true
