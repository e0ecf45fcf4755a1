// Package envoy generates the bootstrap configuration of the Envoy edge that
// sits in front of wsedge authz and dialer.
//
// The bootstrap is built from go-control-plane's typed protos by one small pure
// function per resource (listener, connection manager, virtual hosts, routes,
// filters, clusters, access log), marshalled with protojson and converted to
// YAML. The YAML files under examples/ are produced by `go generate` and a test
// fails when they drift from the generator.
//
// Rules the generated edge enforces (see docs/architecture.md#rules-that-hold-everywhere):
//   - every client-sent header whose name starts with "x-wsedge-" is removed by
//     a header_mutation filter placed before ext_authz, so the only internal
//     headers the dialer can see are the ones authz added;
//   - ext_authz fails closed (failure_mode_allow false, 503 on error);
//   - only health, build info, latency and DERP routes skip ext_authz, and they
//     match exact paths so that no other path can reach the dialer unchecked;
//   - with the fast path (on by default, see fastpath.go) a jwt_authn filter
//     just before ext_authz verifies the signed app token cookie on app
//     routes, never refusing by itself; ext_authz is skipped only when it
//     verified, and the dialer then enforces the token itself. Smuggled
//     keys, token query parameters, preflights, logout hosts and every
//     non-app route are never verified, so they always meet ext_authz;
//   - the app-policy ext_proc (package extproc) runs after ext_authz on app
//     routes only (off by default, switched on per route), on response headers
//     with authz's metadata and the request facts as attributes, and fails
//     closed with 503; a second ext_proc runs before ext_authz on the app
//     host's CORS preflight route only, to answer same-owner preflights that
//     carry no cookies;
//   - per-user rate limiting (off unless -rate-limit is set) runs after
//     ext_authz, one token bucket per user from authz's rate_limit_key
//     metadata, else per client address (IPv4, IPv6 /64); a second limiter
//     keyed by client guards the preflight ext_proc; probes, DERP and
//     latency checks are never limited; a refusal is a 429 with Retry-After
//     and Coder's JSON message (see ratelimit.go).
package envoy

//go:generate go run ./gen -out examples
