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
// The decisions (policy.go, cors.go, cookies.go) work on this package's own
// types; server.go alone speaks Envoy's protobufs. Envoy runs the processor
// twice in its filter chain: once after ext_authz on every app route, and
// once before ext_authz on subdomain-app CORS preflights only, so that a
// preflight, which never carries cookies, from a same-owner app is answered
// without the login flow (see preflight.go).
package extproc
