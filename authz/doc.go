// Package authz is the Envoy ext_authz service that decides who may reach a
// workspace app. Its Check pipeline (pipeline.go) reads top to bottom:
//
//	classify → smuggled API key → signed token → issue → allow / deny
//
// Input, decision and output are three units, as in OPA-Envoy: input.go
// turns Envoy's CheckRequest into this package's Input; the steps (one file
// each: classify.go, smuggle.go, token.go, issue.go) decide on Input and
// Decision alone, so they are testable without protobufs; response.go holds
// all output shaping — the allow's headers, cookies and dynamic metadata,
// Coder's error pages and JSON (package coderhttp), redirects, the
// primary's relayed answers, and the Decision as Envoy's CheckResponse.
// grpc.go adapts the Service to Envoy's Authorization API; the composition
// root registers it. The names shared with Envoy's config come from package
// edgewire.
package authz
