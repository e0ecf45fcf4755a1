package primary

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	"github.com/wsedge/wsedge/appurl"
)

// Paths of the primary's workspace-proxy API (docs/protocol.md#proxy-api).
const (
	pathBuildInfo       = "/api/v2/buildinfo"
	pathRegister        = "/api/v2/workspaceproxies/me/register"
	pathDeregister      = "/api/v2/workspaceproxies/me/deregister"
	pathCryptoKeys      = "/api/v2/workspaceproxies/me/crypto-keys"
	pathIssueToken      = "/api/v2/workspaceproxies/me/issue-signed-app-token"
	pathResolveAppOwner = "/api/v2/workspaceproxies/me/resolve-app-owner"
	pathAppStats        = "/api/v2/workspaceproxies/me/app-stats"
)

// Header names of the proxy API.
const (
	// ProxyTokenHeader authenticates every /me/* call.
	ProxyTokenHeader = "Coder-External-Proxy-Token"
	// RealIPHeader carries the browser's IP on issue calls; the primary
	// uses it for connection and audit logs.
	RealIPHeader = "Coder-Workspace-Proxy-Real-IP"
)

// BuildInfo is coderd's GET /api/v2/buildinfo answer, the fields a proxy
// looks at (all optional on the wire).
type BuildInfo struct {
	ExternalURL           string `json:"external_url"`
	Version               string `json:"version"`
	AgentAPIVersion       string `json:"agent_api_version"`
	ProvisionerAPIVersion string `json:"provisioner_api_version"`
	DashboardURL          string `json:"dashboard_url"`
	DeploymentID          string `json:"deployment_id"`
	UpgradeMessage        string `json:"upgrade_message"`
	// WorkspaceProxy is true when the URL points at a proxy, not a
	// primary; registering against it is a configuration error.
	WorkspaceProxy   bool   `json:"workspace_proxy"`
	Telemetry        bool   `json:"telemetry"`
	WebPushPublicKey string `json:"webpush_public_key"`
}

// RegisterRequest is coderd's RegisterWorkspaceProxyRequest.
type RegisterRequest struct {
	AccessURL        string `json:"access_url"`
	WildcardHostname string `json:"wildcard_hostname"`
	DerpEnabled      bool   `json:"derp_enabled"`
	DerpOnly         bool   `json:"derp_only"`
	// ReplicaID is random per process start and may never be re-used
	// after a deregistration.
	ReplicaID           uuid.UUID `json:"replica_id"`
	Hostname            string    `json:"hostname"`
	ReplicaError        string    `json:"replica_error"`
	ReplicaRelayAddress string    `json:"replica_relay_address"`
	Version             string    `json:"version"`
}

// RegisterResponse is coderd's RegisterWorkspaceProxyResponse.
type RegisterResponse struct {
	// AppSecurityKey is only sent by legacy primaries (docs/protocol.md#legacy-primaries).
	AppSecurityKey      string           `json:"app_security_key,omitempty"`
	DERPMeshKey         string           `json:"derp_mesh_key"`
	DERPRegionID        int32            `json:"derp_region_id"`
	DERPMap             *tailcfg.DERPMap `json:"derp_map"`
	DERPForceWebSockets bool             `json:"derp_force_websockets"`
	// SiblingReplicas are the other live replicas of this proxy.
	SiblingReplicas []Replica `json:"sibling_replicas"`
}

// Replica is coderd's codersdk.Replica.
type Replica struct {
	ID           uuid.UUID `json:"id"`
	Hostname     string    `json:"hostname"`
	CreatedAt    time.Time `json:"created_at"`
	RelayAddress string    `json:"relay_address"`
	RegionID     int32     `json:"region_id"`
	Error        string    `json:"error"`
	// DatabaseLatency is in microseconds.
	DatabaseLatency int32 `json:"database_latency"`
}

type deregisterRequest struct {
	ReplicaID uuid.UUID `json:"replica_id"`
}

// CryptoKey is one key in coderd's wire form: secret in lower-case hex,
// deletes_at the zero time when no deletion is scheduled.
type CryptoKey struct {
	Feature   string    `json:"feature"`
	Secret    string    `json:"secret"`
	DeletesAt time.Time `json:"deletes_at"`
	Sequence  int32     `json:"sequence"`
	StartsAt  time.Time `json:"starts_at"`
}

type cryptoKeysResponse struct {
	CryptoKeys []CryptoKey `json:"crypto_keys"`
}

// IssueTokenRequest is coderd's workspaceapps.IssueTokenRequest.
type IssueTokenRequest struct {
	AppRequest appurl.Request `json:"app_request"`
	// PathAppBaseURL is the proxy's access URL (required).
	PathAppBaseURL string `json:"path_app_base_url"`
	// AppHostname is the proxy's wildcard hostname.
	AppHostname string `json:"app_hostname"`
	// AppPath is the path beneath the app base, for the post-login
	// redirect.
	AppPath string `json:"app_path"`
	// AppQuery is the raw query of the browser's request.
	AppQuery string `json:"app_query"`
	// SessionToken is the user's Coder session token, or empty.
	SessionToken string `json:"session_token"`
}

type issueTokenResponse struct {
	SignedTokenStr string `json:"signed_token_str"`
}

// IssueResult is the primary's answer to an issue call: a signed token
// on 201, otherwise the complete response to relay verbatim.
type IssueResult struct {
	Token string
	Relay *RelayedResponse
}

// RelayedResponse is a non-201 answer of the primary, exactly as
// received (redirects are not followed).
type RelayedResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

type resolveAppOwnerRequest struct {
	AppRequest appurl.Request `json:"app_request"`
}

type resolveAppOwnerResponse struct {
	OwnerID uuid.UUID `json:"owner_id"`
}

// StatsReport is coderd's workspaceapps.StatsReport: one app session.
type StatsReport struct {
	UserID       uuid.UUID           `json:"user_id"`
	WorkspaceID  uuid.UUID           `json:"workspace_id"`
	AgentID      uuid.UUID           `json:"agent_id"`
	AccessMethod appurl.AccessMethod `json:"access_method"`
	// SlugOrPort is empty for terminals.
	SlugOrPort       string    `json:"slug_or_port"`
	SessionID        uuid.UUID `json:"session_id"`
	SessionStartedAt time.Time `json:"session_started_at"`
	// SessionEndedAt is zero while the session is open.
	SessionEndedAt time.Time `json:"session_ended_at"`
	Requests       int       `json:"requests"`
}

type reportAppStatsRequest struct {
	Stats []StatsReport `json:"stats"`
}
