// Package devstack is the dev and end-to-end harness: it starts a whole
// wsedge deployment on one machine — the coderd stand-in (dev/primary),
// real Envoy, authz, the dialer and agent stand-ins (dev/agent) over a real
// tailnet — for `wsedge dev` and the e2e tests. Production wiring lives in
// internal/stack, which never imports the stand-ins.
package devstack
