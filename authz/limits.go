package authz

import (
	"errors"
	"fmt"
)

// Limits bound the work authz takes on at once. What does not fit is
// answered at once with a denied Check carrying 503 and Retry-After —
// never an allow, never a wait — so a burst costs a bounded number of
// goroutines here and a bounded number of calls to the primary.
type Limits struct {
	// Checks bounds concurrent Check calls; 0 means DefaultMaxChecks.
	Checks int
	// IssueCalls bounds concurrent issue calls to the primary (single
	// flights: requests of one session for one app share a call); 0
	// means DefaultMaxIssueCalls.
	IssueCalls int
}

// Defaults sized for a small deployment (a few hundred users): Checks
// answered from a cookie take microseconds, so 256 in flight is a burst
// far beyond what one replica serves normally; 16 concurrent issue calls
// is what one coderd replica answers without queueing.
const (
	DefaultMaxChecks     = 256
	DefaultMaxIssueCalls = 16
)

// RetryAfterSeconds is the Retry-After of authz's 503s: a shed request is
// worth retrying almost at once.
const RetryAfterSeconds = 1

// errIssueBusy is returned by an issue call that found no free slot.
var errIssueBusy = errors.New("too many issue calls in flight")

func (l Limits) withDefaults() (Limits, error) {
	if l.Checks < 0 || l.IssueCalls < 0 {
		return l, fmt.Errorf("authz: negative limit (checks %d, issue calls %d)", l.Checks, l.IssueCalls)
	}
	if l.Checks == 0 {
		l.Checks = DefaultMaxChecks
	}
	if l.IssueCalls == 0 {
		l.IssueCalls = DefaultMaxIssueCalls
	}
	return l, nil
}

// slots is a counting semaphore that never waits.
type slots chan struct{}

func newSlots(n int) slots { return make(slots, n) }

// take reports whether a slot was free; the caller then owes a release.
func (s slots) take() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s slots) release() { <-s }
