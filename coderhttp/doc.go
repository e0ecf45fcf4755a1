// Package coderhttp is wsedge's Coder-compatible response vocabulary: the
// JSON body coderd answers errors with ({message, detail, validations}) and
// the one static HTML error page every wsedge component shows a browser.
// authz (through Envoy's denied responses) and the dialer (directly) answer
// with it, so a user sees one design and an API client one shape, the same
// as Coder's own proxy gives them (docs/protocol.md#error-pages).
//
// It knows nothing of Envoy or of wsedge's other packages: callers decide
// which answer a request gets, this package only spells it.
package coderhttp
