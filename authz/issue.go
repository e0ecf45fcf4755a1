package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/wsedge/wsedge/appurl"
)

// IssueRequest is what authz asks the primary to authorise (coderd's
// IssueTokenRequest plus the client IP it forwards).
type IssueRequest struct {
	AppRequest     appurl.Request
	PathAppBaseURL string
	AppHostname    string
	AppPath        string
	AppQuery       string
	SessionToken   string
	ClientIP       string
}

// IssueResult is the primary's answer: a signed token on 201, otherwise
// the complete response to relay to the browser verbatim.
type IssueResult struct {
	Token string
	Relay *RelayedResponse
}

// RelayedResponse is a non-201 answer of the primary.
type RelayedResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// Issuer obtains signed app tokens from the primary.
type Issuer interface {
	Issue(ctx context.Context, req IssueRequest) (IssueResult, error)
}

// issueTimeout bounds one issue call, independently of the Envoy request
// that started it: a single flight serves every waiter, so it must not die
// with the first caller.
const issueTimeout = 10 * time.Second

// issuer single-flights issue calls per (session token, app request), so
// a burst of parallel requests without a token causes one primary call.
type issuer struct {
	upstream Issuer
	group    singleflight.Group
	// joined, when set (tests), is called as a request joins a flight.
	joined func()
}

func (i *issuer) issue(ctx context.Context, req IssueRequest) (IssueResult, error) {
	key := flightKey(req)
	ch := i.group.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), issueTimeout)
		defer cancel()
		return i.upstream.Issue(ctx, req)
	})
	if i.joined != nil {
		i.joined()
	}
	select {
	case <-ctx.Done():
		return IssueResult{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return IssueResult{}, r.Err
		}
		return r.Val.(IssueResult), nil
	}
}

// flightKey identifies requests that must get the same answer. Anonymous
// answers are login redirects that name the requested path, so for them
// the path and query are part of the key.
func flightKey(req IssueRequest) string {
	r := req.AppRequest
	var b strings.Builder
	sum := sha256.Sum256([]byte(req.SessionToken))
	b.WriteString(hex.EncodeToString(sum[:8]))
	for _, f := range []string{string(r.AccessMethod), r.BasePath, r.Prefix, r.UsernameOrID, r.WorkspaceNameOrID, r.AgentNameOrID, r.AppSlugOrPort} {
		b.WriteByte(0)
		b.WriteString(f)
	}
	if req.SessionToken == "" {
		b.WriteByte(0)
		b.WriteString(req.AppPath)
		b.WriteByte('?')
		b.WriteString(req.AppQuery)
	}
	return b.String()
}

// relayDecision turns the primary's non-201 answer into the client's
// response, headers and body as they came, minus the framing headers that
// Envoy recomputes.
func relayDecision(r *RelayedResponse) Decision {
	h := http.Header{}
	for k, vs := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "Trailer", "Proxy-Connection":
			continue
		}
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	return deny(r.Status, h, r.Body, "primary_relay")
}

var errNoIssuer = errors.New("authz: no issuer configured")
