package envoy

import (
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// admin is Envoy's admin endpoint; readiness probes use its /ready.
func admin(c Config) *bootstrapv3.Admin {
	return &bootstrapv3.Admin{Address: socketAddress(c.AdminAddr.Addr().String(), uint32(c.AdminAddr.Port()))}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
