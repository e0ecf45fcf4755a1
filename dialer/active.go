package dialer

import "sync"

// activeSet counts long-lived connections (upgraded to websockets or
// DERP) that http.Server.Shutdown does not wait for. Unlike a
// sync.WaitGroup, it may gain members while someone waits for it to
// drain.
type activeSet struct {
	mu   sync.Mutex
	n    int
	idle chan struct{}
}

func (a *activeSet) add() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 0 {
		a.idle = make(chan struct{})
	}
	a.n++
}

func (a *activeSet) done() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n--
	if a.n == 0 {
		close(a.idle)
	}
}

// drained is closed once the set is empty.
func (a *activeSet) drained() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return a.idle
}
