package tsnode

import (
	"errors"
	"fmt"
	"sync"

	"tailscale.com/envknob"
)

// ErrKnobConflict is returned by New when the node asks for a process-wide
// tailscale knob (DERP-only, websocket DERP, loopback-only endpoints) that
// differs from what the nodes alive in the process use.
var ErrKnobConflict = errors.New("tsnode: process-wide option conflicts with a live node")

// ErrWebsocketDERPUnavailable is returned by New for ForceWebsocketDERP in a
// binary built without the ts_debug_websockets tag: upstream's DERP client
// only dials websockets when compiled with it.
var ErrWebsocketDERPUnavailable = errors.New("tsnode: websocket DERP needs the ts_debug_websockets build tag")

// knobs are the options that upstream only offers as process-wide debug
// environment knobs.
type knobs struct {
	derpOnly     bool
	wsDERP       bool
	loopbackOnly bool
	plainDERP    bool
}

var knobState struct {
	mu   sync.Mutex
	live int
	cur  knobs
}

// acquireKnobs installs k for the process, or checks that the live nodes use
// the same. The knobs are only written while no node runs, because upstream
// reads them without synchronisation.
func acquireKnobs(k knobs) error {
	if k.wsDERP && !websocketDERPCompiled {
		return ErrWebsocketDERPUnavailable
	}
	knobState.mu.Lock()
	defer knobState.mu.Unlock()
	if knobState.live > 0 {
		if knobState.cur != k {
			return fmt.Errorf("%w: live nodes use %+v, asked for %+v", ErrKnobConflict, knobState.cur, k)
		}
		knobState.live++
		return nil
	}
	setKnobs(knobState.cur, k)
	knobState.cur = k
	knobState.live = 1
	return nil
}

// releaseKnobs is called once a node has stopped completely.
func releaseKnobs() {
	knobState.mu.Lock()
	defer knobState.mu.Unlock()
	knobState.live--
	if knobState.live == 0 && knobState.cur != (knobs{}) {
		setKnobs(knobState.cur, knobs{})
		knobState.cur = knobs{}
	}
}

// setKnobs writes only the knobs that change: other users of tailscale in
// the process (DERP mesh clients) read some of them without locking.
func setKnobs(old, k knobs) {
	set := func(name string, was, now bool) {
		if was != now {
			envknob.Setenv(name, boolEnv(now))
		}
	}
	set("TS_DEBUG_NEVER_DIRECT_UDP", old.derpOnly, k.derpOnly)
	set("TS_DEBUG_OMIT_LOCAL_ADDRS", old.loopbackOnly, k.loopbackOnly)
	set("TS_DEBUG_USE_DERP_HTTP", old.plainDERP, k.plainDERP)
	if websocketDERPCompiled {
		set("TS_DEBUG_DERP_WS_CLIENT", old.wsDERP, k.wsDERP)
	}
}

func boolEnv(b bool) string {
	if b {
		return "true"
	}
	return ""
}
