// Package primary is wsedge's client for the Coder primary's (coderd's)
// workspace-proxy API, /api/v2/workspaceproxies/me/*: build-info
// pre-flight, registration and its keep-alive loop, crypto keys with a
// verifying-key cache, signed app token issuance with verbatim relay of
// the primary's non-201 answers, app owner resolution with a bounded
// cache, and app usage stats upload.
//
// The client needs only the primary's URL and the proxy token an admin
// got from `coder wsproxy create`; it knows nothing of wsedge's
// embedded dev primary. Every response is read under a size cap and a
// per-call deadline, and every failure is a typed error: *Error for an
// answer the primary gave (coderd's JSON error shape), ErrUnavailable for
// transport failures and timeouts, ErrResponseTooLarge and
// ErrInvalidResponse for hostile or broken answers.
package primary
