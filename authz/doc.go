// Package authz is the Envoy ext_authz service that decides who may reach a
// workspace app. Its Check pipeline reads top to bottom:
//
//	classify → smuggled API key → signed token → issue → allow / deny
//
// Each step lives in its own file and works on this package's own types
// (Input, Decision); grpc.go alone translates between those and Envoy's
// protobufs, so the decision code is testable without Envoy.
package authz
