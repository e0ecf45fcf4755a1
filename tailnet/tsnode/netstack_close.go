package tsnode

import (
	"reflect"
	"time"
	"unsafe"

	"tailscale.com/wgengine/netstack"
)

// closeNetstack closes ns without the shutdown deadlock of upstream
// v1.102.5: Impl.Close stops the goroutine that drains the link endpoint's
// outbound queue (512 packets) and then aborts every TCP endpoint, each
// abort writing a RST into that queue. With more than 512 endpoints (open
// connections or TIME-WAIT ones after a burst of dials) the 513th write
// blocks forever. Closing the link endpoint first makes those writes fail
// at once. The endpoint is an unexported field, reached by reflection; if
// a future version renames it, Close falls back to a bounded wait.
func closeNetstack(ns *netstack.Impl, logf func(string, ...any)) {
	if lep, ok := linkEndpointOf(ns); ok {
		lep.Close()
		_ = ns.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ns.Close()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		logf("tsnode: netstack did not close within 10 s (upstream queue deadlock); giving up on it")
	}
}

func linkEndpointOf(ns *netstack.Impl) (interface{ Close() }, bool) {
	f := reflect.ValueOf(ns).Elem().FieldByName("linkEP")
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() {
		return nil, false
	}
	v := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface()
	c, ok := v.(interface{ Close() })
	return c, ok
}
