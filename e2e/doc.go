// Package e2e holds end-to-end tests that run the real Envoy binary (see
// internal/testutil) in front of real gRPC and HTTP servers on loopback.
package e2e
