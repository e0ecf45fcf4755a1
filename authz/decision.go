package authz

import (
	"net/http"

	"github.com/wsedge/wsedge/coderhttp"
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
	// Metadata is the dynamic metadata of an allow, keyed by the
	// edgewire.Meta* names.
	Metadata map[string]string
	// Outcome is a short, bounded label for metrics and logs.
	Outcome string
}

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

// denyJSON answers with coderd's JSON error body.
func denyJSON(status int, resp coderhttp.Response, outcome string) Decision {
	b, err := coderhttp.EncodeJSON(resp)
	if err != nil {
		// A Response of strings always encodes; never answer with an
		// empty body if it does not.
		b = []byte(http.StatusText(status))
	}
	h := http.Header{}
	h.Set("Content-Type", coderhttp.JSONContentType)
	return deny(status, h, b, outcome)
}
