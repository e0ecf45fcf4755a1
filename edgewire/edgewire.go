// Package edgewire is the edge contract: the names Envoy's configuration and
// the services behind it must spell alike. Package envoy writes them into
// the bootstrap; authz, extproc and the dialer read them. Nothing here
// imports anything of wsedge, so every side depends on this one leaf rather
// than on each other.
//
// Who writes and who reads each name:
//
//   - InternalHeaderPrefix: envoy removes every client-sent header with it
//     before ext_authz runs; the dialer strips such headers again before a
//     request reaches an app (IsInternalHeader).
//   - AppTokenHeader: authz sets it on an allowed request; the dialer reads
//     it; envoy removes it from responses.
//   - ExtAuthzFilter, MetadataNamespace and the Meta* keys: authz emits the
//     keys as dynamic metadata of an allow; Envoy files them under the
//     ext_authz filter's name; envoy forwards that namespace to the
//     app-policy ext_proc, buckets its rate limiter by MetaRateLimitKey and
//     prints the namespace in the access log; extproc reads the keys.
//   - ExtProcPhaseKey and ExtProcPhaseBeforeAuthz: envoy sends them as gRPC
//     initial metadata of the preflight ext_proc filter; extproc tells its
//     streams apart by them.
//   - The *Attribute names: envoy asks Envoy to send them with response
//     headers to the app-policy ext_proc; extproc reads them.
package edgewire

import "strings"

// Internal headers. Header names are case-insensitive; they are spelled
// here as Envoy writes them (lower case). Go's http.Header canonicalises
// them on Set, Get and Values.
const (
	// InternalHeaderPrefix starts the name of every header wsedge
	// components pass to each other. Clients never get to send one.
	InternalHeaderPrefix = "x-wsedge-"
	// AppTokenHeader carries the verified signed app token from authz to
	// the dialer.
	AppTokenHeader = InternalHeaderPrefix + "app-token"
	// WarmRouteHeader, set to WarmRouteValue by Envoy's warm routes for
	// same-origin requests and websocket handshakes (overwriting any
	// client copy; every route that is not warm strips the prefix), tells
	// the dialer that no ext_proc will see the response: a token it
	// refuses may then be sent to authz's Check even with Origin.
	WarmRouteHeader = InternalHeaderPrefix + "warm-route"
	WarmRouteValue  = "1"
)

// IsInternalHeader reports whether name (in any case) starts with
// InternalHeaderPrefix.
func IsInternalHeader(name string) bool {
	return len(name) >= len(InternalHeaderPrefix) && strings.EqualFold(name[:len(InternalHeaderPrefix)], InternalHeaderPrefix)
}

// Dynamic metadata of an ext_authz allow.
const (
	// ExtAuthzFilter is the name of the ext_authz filter in the bootstrap.
	ExtAuthzFilter = "envoy.filters.http.ext_authz"
	// MetadataNamespace is where Envoy files the dynamic metadata of an
	// allow: the ext_authz filter's own name.
	MetadataNamespace = ExtAuthzFilter

	MetaUserID       = "user_id"
	MetaWorkspaceID  = "workspace_id"
	MetaAgentID      = "agent_id"
	MetaApp          = "app"
	MetaAccessMethod = "access_method"
	MetaCORSBehavior = "cors_behavior"
	// MetaRateLimitKey is the key Envoy's local rate limiter buckets by: the
	// user ID, or the client IP for anonymous requests.
	MetaRateLimitKey = "rate_limit_key"
)

// ext_proc streams. Streams without the phase key come from the app-policy
// filter after ext_authz.
const (
	// ExtProcPhaseKey is the gRPC initial-metadata key with which the
	// ext_proc filter placed before ext_authz marks its streams; its value
	// is ExtProcPhaseBeforeAuthz.
	ExtProcPhaseKey         = InternalHeaderPrefix + "extproc-phase"
	ExtProcPhaseBeforeAuthz = "before-authz"
)

// Attributes (Envoy's CEL names) the app-policy ext_proc receives with
// response headers.
const (
	// CodeDetailsAttribute tells responses that came from upstream apart
	// from Envoy's local replies (ext_authz denials among them), which
	// Envoy also runs through every encoder filter.
	CodeDetailsAttribute = "response.code_details"
	// HostAttribute, MethodAttribute and OriginAttribute carry the request
	// facts the response policy needs, so ordinary app requests cost one
	// ext_proc message instead of two.
	HostAttribute   = "request.host"
	MethodAttribute = "request.method"
	OriginAttribute = "request.headers['origin']"
)

// The warm path (Envoy's fast path): envoy writes a jwt_authn filter whose
// verified claims land in dynamic metadata, extproc reads them there when
// ext_authz did not run, and the dialer sets ColdPathCookie to send a
// browser back through ext_authz.
const (
	// JWTAuthnFilter is the jwt_authn filter name, also the namespace of
	// the verified token's claims in dynamic metadata.
	JWTAuthnFilter = "envoy.filters.http.jwt_authn"
	// JWTPayloadKey is the metadata key of the verified token's claims.
	JWTPayloadKey = "verified_token"
	// ColdPathCookie, when a request carries it, keeps jwt_authn from
	// verifying, so ext_authz decides. The dialer sets it briefly when it
	// sends a browser back to the cold path; it never reaches an app.
	ColdPathCookie = "wsedge_cold_path"
)

// AuthzCheckHeaders are the request headers Envoy's ext_authz filter sends
// authz (envoy writes them as its allowed headers), and those the dialer
// copies into the Check it makes for a fast-path token it refuses: credentials,
// content negotiation, origin, whether the request is a navigation
// (Sec-Fetch-Mode), forwarding facts, and Envoy's
// x-request-id (authz logs it, as Envoy's access log and the dialer do).
// Host, path, method and scheme travel in their own CheckRequest fields.
var AuthzCheckHeaders = []string{
	"accept",
	"authorization",
	"coder-session-token",
	"cookie",
	"host",
	"origin",
	"sec-fetch-mode",
	"sec-websocket-protocol",
	"user-agent",
	"x-envoy-external-address",
	"x-forwarded-for",
	"x-forwarded-host",
	"x-forwarded-proto",
	"x-request-id",
}
