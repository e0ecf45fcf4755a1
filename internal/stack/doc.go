// Package stack is wsedge's production composition root: it assembles the
// authz and dialer services from their packages, as `wsedge authz` and
// `wsedge dialer` run them. ServeAuthz registers authz's ext_authz and
// extproc's ext_proc services on the one gRPC server Envoy talks to
// (grpc.go); neither service package knows the other. Each Serve function owns every goroutine it
// starts and returns once they have all stopped. It never imports a
// stand-in (dev/...); the dev harness is internal/devstack.
//
// Errors: the package that fails names itself ("primary: GET …",
// "appurl: …"); stack adds at most the step that failed ("register: …")
// and no prefix of its own, since the command that runs it already prints
// "wsedge dialer: ".
package stack
