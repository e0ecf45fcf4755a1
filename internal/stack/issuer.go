package stack

import (
	"context"

	"github.com/wsedge/wsedge/authz"
	"github.com/wsedge/wsedge/primary"
)

// PrimaryIssuer is authz's Issuer backed by the primary's
// issue-signed-app-token endpoint.
type PrimaryIssuer struct {
	Client *primary.Client
}

// Issue implements authz.Issuer.
func (p PrimaryIssuer) Issue(ctx context.Context, r authz.IssueRequest) (authz.IssueResult, error) {
	res, err := p.Client.IssueSignedAppToken(ctx, primary.IssueTokenRequest{
		AppRequest:     r.AppRequest,
		PathAppBaseURL: r.PathAppBaseURL,
		AppHostname:    r.AppHostname,
		AppPath:        r.AppPath,
		AppQuery:       r.AppQuery,
		SessionToken:   r.SessionToken,
	}, r.ClientIP)
	if err != nil {
		return authz.IssueResult{}, err
	}
	out := authz.IssueResult{Token: res.Token}
	if res.Relay != nil {
		out.Relay = &authz.RelayedResponse{Status: res.Relay.Status, Header: res.Relay.Header, Body: res.Relay.Body}
	}
	return out, nil
}
