package derp

import (
	"errors"
	"net"

	"tailscale.com/net/stun"
)

// ServeSTUN answers STUN binding requests on pc until pc is closed (then it
// returns nil). Tailscale clients need some STUN server in the DERP map:
// without one, netcheck concludes that UDP cannot be sent and magicsock
// rebinds, dropping its DERP connections, at every periodic check.
func ServeSTUN(pc *net.UDPConn) error {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		tx, err := stun.ParseBindingRequest(buf[:n])
		if err != nil {
			continue
		}
		_, _ = pc.WriteToUDPAddrPort(stun.Response(tx, from), from)
	}
}
