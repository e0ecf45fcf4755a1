package devstack

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"time"

	"github.com/wsedge/wsedge/internal/stack"
	"github.com/wsedge/wsedge/primary"
)

// The services DevConfig.ServeElsewhere is asked to run.
const (
	ServiceAuthz  = "authz"
	ServiceDialer = "dialer"
)

// ServiceSpec is what authz or the dialer of a Dev needs to run in another
// process on this machine: plain data, so it can be sent there (as JSON,
// say) and turned back into the service by ServeService.
type ServiceSpec struct {
	DashboardURL, AccessURL string
	WildcardHostname        string
	// PrimaryAddr and EdgeAddr serve the dashboard host and the access and
	// app hosts (no DNS on loopback).
	PrimaryAddr, EdgeAddr netip.AddrPort
	ProxyToken            string
	// DERPCertPEM is the dev relay's self-signed certificate.
	DERPCertPEM []byte
	// AuthzAddr is authz's listener (the dialer's health report checks it).
	AuthzAddr string
	// JWKSAddr is where authz serves Envoy the app-token keys.
	JWKSAddr           string
	KeyRefresh         time.Duration
	DialTimeout        time.Duration
	StatsFlushInterval time.Duration
}

// serviceSpec describes d's authz and dialer.
func (d *Dev) serviceSpec() ServiceSpec {
	return ServiceSpec{
		DashboardURL:       d.cfg.DashboardURL.String(),
		AccessURL:          d.cfg.AccessURL.String(),
		WildcardHostname:   d.cfg.WildcardHostname,
		PrimaryAddr:        d.PrimaryAddr,
		EdgeAddr:           d.EdgeAddr,
		ProxyToken:         d.Primary.ProxyToken(),
		DERPCertPEM:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.derpCert.Raw}),
		AuthzAddr:          d.w.authzLn.Addr().String(),
		JWKSAddr:           d.w.jwksAddr,
		KeyRefresh:         d.cfg.KeyRefresh,
		DialTimeout:        d.cfg.DialTimeout,
		StatsFlushInterval: d.cfg.StatsFlushInterval,
	}
}

// Spec is what another process needs to reach this Dev's primary and
// relay as its services do (ServiceSpec.Clients, ServiceSpec.DERPRoots).
func (d *Dev) Spec() ServiceSpec { return d.serviceSpec() }

// DERPRoots trusts the dev relay's certificate.
func (s ServiceSpec) DERPRoots() (*x509.CertPool, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.DERPCertPEM) {
		return nil, errors.New("devstack: no DERP certificate in the spec")
	}
	return roots, nil
}

// dev rebuilds the part of a Dev that its services' wiring reads.
func (s ServiceSpec) dev(log *slog.Logger) (*Dev, error) {
	dash, err := url.Parse(s.DashboardURL)
	if err != nil {
		return nil, fmt.Errorf("devstack: dashboard URL: %w", err)
	}
	access, err := url.Parse(s.AccessURL)
	if err != nil {
		return nil, fmt.Errorf("devstack: access URL: %w", err)
	}
	d := &Dev{
		cfg: DevConfig{
			DashboardURL: dash, AccessURL: access, WildcardHostname: s.WildcardHostname,
			DialTimeout: s.DialTimeout, StatsFlushInterval: s.StatsFlushInterval, Logger: log,
			KeyRefresh: s.KeyRefresh,
		},
		PrimaryAddr: s.PrimaryAddr, EdgeAddr: s.EdgeAddr, log: log,
	}
	d.w.httpClient, d.w.wsClient = d.routedClients()
	if d.w.roots, err = s.DERPRoots(); err != nil {
		return nil, err
	}
	d.w.client, err = primary.New(primary.Options{URL: dash, ProxyToken: s.ProxyToken, HTTPClient: d.w.httpClient, Timeout: 10 * time.Second, Logger: log})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Primary is a client of the Dev's primary with the services' proxy token,
// reaching it as they do.
func (s ServiceSpec) Primary(log *slog.Logger) (*primary.Client, error) {
	d, err := s.dev(log)
	if err != nil {
		return nil, err
	}
	return d.w.client, nil
}

// ServeService runs service (ServiceAuthz or ServiceDialer) of the Dev that
// spec describes on ln until ctx ends, wired exactly as StartDev wires it
// in its own process. It is the other end of DevConfig.ServeElsewhere.
func ServeService(ctx context.Context, service string, ln net.Listener, spec ServiceSpec, log *slog.Logger) error {
	d, err := spec.dev(log)
	if err != nil {
		return err
	}
	switch service {
	case ServiceAuthz:
		jwks, err := net.Listen("tcp", spec.JWKSAddr)
		if err != nil {
			return fmt.Errorf("devstack: authz jwks: %w", err)
		}
		return stack.ServeAuthz(ctx, authzConfig(d.cfg, d.w.client, ln, jwks, nil, log))
	case ServiceDialer:
		return stack.ServeDialer(ctx, dialerConfig(d.cfg, &d.w, spec.ProxyToken, spec.AuthzAddr, ln, log))
	}
	return fmt.Errorf("devstack: no service %q", service)
}
