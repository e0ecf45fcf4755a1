package dialer

import (
	"context"
	"net/http"
)

// RequestIDHeader is the request ID Envoy gives every request (and puts in
// its access log as request_id): the dialer's log lines about a request
// carry it as request_id, so that Envoy, authz and dialer lines correlate.
const RequestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds what ends up in a log line (Envoy's are UUIDs).
const maxRequestIDLen = 128

// headerRequestID is the request's ID as Envoy sent it, bounded.
func headerRequestID(r *http.Request) string {
	id := r.Header.Get(RequestIDHeader)
	if len(id) > maxRequestIDLen {
		id = id[:maxRequestIDLen]
	}
	return id
}

// requestID is the ID of the request ctx belongs to, "" if none; code
// that only sees the context (terminal heartbeats) logs it too.
func requestID(ctx context.Context) string {
	if st := stateOf(ctx); st != nil {
		return st.id
	}
	return ""
}
