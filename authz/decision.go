package authz

import "net/http"

// Decision is the outcome of one Check: either an allow, which forwards the
// request upstream with some headers changed, or a deny, which answers the
// client directly with Status, Header and Body.
type Decision struct {
	Allow bool

	// Deny: the response the client gets instead of the upstream's.
	Status int
	Header http.Header
	Body   []byte

	// Allow: headers set on (or removed from) the upstream request, and
	// headers added to the response the client gets.
	UpstreamHeader http.Header
	UpstreamRemove []string
	ResponseHeader http.Header
	// Metadata is the dynamic metadata of an allow, keyed by the
	// edgewire.Meta* names.
	Metadata map[string]string
	// Outcome is a short, bounded label for metrics and logs.
	Outcome string
}
