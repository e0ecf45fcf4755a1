// Package testutil holds fixtures shared by tests of several packages: a
// harness that runs the real Envoy binary on loopback, free ports and
// self-signed certificates.
package testutil
