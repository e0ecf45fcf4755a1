package dialer

import (
	"testing"
	"time"
)

func TestActiveSetDrains(t *testing.T) {
	var a activeSet
	select {
	case <-a.drained():
	default:
		t.Fatal("empty set not drained")
	}
	a.add()
	a.add()
	d := a.drained()
	a.done()
	select {
	case <-d:
		t.Fatal("drained with one member left")
	case <-time.After(10 * time.Millisecond):
	}
	a.done()
	select {
	case <-d:
	case <-time.After(time.Second):
		t.Fatal("not drained after the last member left")
	}
	// Reusable after draining.
	a.add()
	select {
	case <-a.drained():
		t.Fatal("drained with a new member")
	default:
	}
	a.done()
}
