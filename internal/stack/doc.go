// Package stack assembles wsedge's services from their packages: what the
// authz, dialer and dev commands run, and what the end-to-end tests start.
// Each Serve function owns every goroutine it starts and returns once they
// have all stopped.
package stack
