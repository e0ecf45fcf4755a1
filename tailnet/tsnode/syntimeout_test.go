package tsnode

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestSynTimeoutFollowsTheHandshakeTime: the first attempt of a dial is
// abandoned after a timeout derived from the peer's measured handshake
// time, so a SYN lost to the agent's TIME-WAIT costs a fraction of a
// second on a fast path, and the full synAttemptTimeout where nothing is
// known or a WireGuard handshake may be needed first.
func TestSynTimeoutFollowsTheHandshakeTime(t *testing.T) {
	id := uuid.New()
	n := &Node{peers: map[uuid.UUID]*peer{id: {id: id}}}

	if got := n.synTimeout(id, true); got != synAttemptTimeout {
		t.Errorf("no measurement yet: %v, want %v", got, synAttemptTimeout)
	}
	if got := n.synTimeout(uuid.New(), true); got != synAttemptTimeout {
		t.Errorf("unknown peer: %v, want %v", got, synAttemptTimeout)
	}

	n.observeHandshake(id, 2*time.Millisecond)
	if got := n.synTimeout(id, true); got != synMinTimeout {
		t.Errorf("2 ms handshakes: %v, want the floor %v", got, synMinTimeout)
	}
	if got := n.synTimeout(id, false); got != synAttemptTimeout {
		t.Errorf("stale WireGuard session: %v, want %v", got, synAttemptTimeout)
	}

	// A slower path (100 ms handshakes) moves the estimate by 1/8 per
	// sample, towards 4 × 100 ms + slack.
	for range 64 {
		n.observeHandshake(id, 100*time.Millisecond)
	}
	got := n.synTimeout(id, true)
	if want := 4*100*time.Millisecond + synSlack; got < want-10*time.Millisecond || got > want {
		t.Errorf("100 ms handshakes: %v, want about %v", got, want)
	}

	// Very slow paths are capped.
	for range 64 {
		n.observeHandshake(id, time.Second)
	}
	if got := n.synTimeout(id, true); got != synAttemptTimeout {
		t.Errorf("1 s handshakes: %v, want the cap %v", got, synAttemptTimeout)
	}

}
