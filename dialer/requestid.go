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

type requestIDKey struct{}

// withRequestID keeps the request's ID in its context, for log lines of
// code that only sees the context (terminal heartbeats).
func withRequestID(r *http.Request) *http.Request {
	id := r.Header.Get(RequestIDHeader)
	if id == "" {
		return r
	}
	if len(id) > maxRequestIDLen {
		id = id[:maxRequestIDLen]
	}
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}

// requestID is the ID of the request ctx belongs to, "" if none.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
