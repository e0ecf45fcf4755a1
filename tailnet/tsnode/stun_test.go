package tsnode

import (
	"net"
	"testing"

	"tailscale.com/net/stun"
)

// serveSTUN answers STUN binding requests on 127.0.0.1 and returns the port.
// Without any STUN server, upstream netcheck reports that IPv4 cannot send
// and magicsock rebinds (dropping its DERP connections) at every periodic
// endpoint update.
func serveSTUN(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			tx, err := stun.ParseBindingRequest(buf[:n])
			if err != nil {
				continue
			}
			_, _ = pc.WriteToUDPAddrPort(stun.Response(tx, from), from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().(*net.UDPAddr).Port
}
