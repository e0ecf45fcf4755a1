// Package extproc is wsedge's Envoy external processor
// (envoy.service.ext_proc.v3.ExternalProcessor): the per-app browser policy
// that only wsedge can decide, applied to request and response headers on
// app routes (never bodies or trailers).
//
//   - CORS for subdomain apps, per the signed token's cors_behavior that authz
//     hands over in dynamic metadata: "simple" answers preflights itself and
//     allows an origin only when it is a subdomain app on this proxy's
//     wildcard owned by the owner of the target app; "passthru" leaves CORS
//     to the app. The app's own CORS headers and CORS Vary values are removed
//     except in passthru mode; path apps always get the removal.
//   - Response hygiene: an app never sets a Coder cookie, and path-app
//     responses carry X-Content-Type-Options: nosniff as Coder's proxy sends.
//
// The decisions (policy.go, cors.go, cookies.go, preflight.go) work on this
// package's own types; server.go alone speaks Envoy's protobufs. Envoy runs
// the processor twice in its filter chain (package envoy):
//
//   - after ext_authz on every app route, with authz's dynamic metadata.
//     Ordinary requests cost one message: the response headers, with the
//     request's host, method and Origin as attributes. Only the preflight
//     route also sends request headers, so that a preflight ext_authz let
//     through is answered as coderd's CORS handler would. Envoy runs local
//     replies (ext_authz denials with their login redirects and cookies,
//     Envoy's own errors) through this filter too; the response code
//     details attribute tells them apart, and they pass untouched.
//   - before ext_authz on subdomain-app CORS preflights only, so that a
//     preflight, which never carries cookies, from a same-owner app is
//     answered without the login flow (see preflight.go).
//
// Envoy fails a request closed (503) when the processor errors or misses
// the message timeout. The names the processor reads (authz's metadata
// keys, the phase key, the attributes) are the edge contract of package
// edgewire; the composition root (internal/stack) serves the processor on
// the same gRPC server as authz.
package extproc
