package authz

import (
	"encoding/json"
	"net/http"
)

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
	Metadata       map[string]string
	// Outcome is a short, bounded label for metrics and logs.
	Outcome string
}

// Metadata keys emitted on allow (namespace envoy.filters.http.ext_authz).
const (
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

// AppTokenHeader carries the verified signed app token from authz to the
// dialer. Envoy removes any client-sent copy before ext_authz runs.
const AppTokenHeader = "X-Wsedge-App-Token"

func deny(status int, header http.Header, body []byte, outcome string) Decision {
	if header == nil {
		header = http.Header{}
	}
	return Decision{Status: status, Header: header, Body: body, Outcome: outcome}
}

// redirect is a 303 See Other to location, optionally setting cookies.
func redirect(location string, outcome string, cookies ...*http.Cookie) Decision {
	h := http.Header{}
	h.Set("Location", location)
	for _, c := range cookies {
		h.Add("Set-Cookie", c.String())
	}
	return deny(http.StatusSeeOther, h, nil, outcome)
}

// jsonResponse mirrors coderd's error shape: {"message", "detail"}, plus
// login_url on a sign-in request to a page's background request.
type jsonResponse struct {
	Message     string           `json:"message"`
	Detail      string           `json:"detail,omitempty"`
	Validations []jsonValidation `json:"validations,omitempty"`
	LoginURL    string           `json:"login_url,omitempty"`
}

type jsonValidation struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func denyJSON(status int, resp jsonResponse, outcome string) Decision {
	b, _ := json.Marshal(resp)
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	return deny(status, h, append(b, '\n'), outcome)
}
