package devprimary

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
	devcoord "github.com/wsedge/wsedge/dev/coord"
	"github.com/wsedge/wsedge/tokens"
)

// Version is the Coder version the dev primary claims in buildinfo.
const Version = "v2.26.0+wsedge-dev"

// ProxySpec is a workspace proxy the dev primary knows, as if an admin had
// created it (POST /api/v2/workspaceproxies).
type ProxySpec struct {
	ID   uuid.UUID
	Name string
	// Secret is the 64-character secret of the proxy token
	// "<id>:<secret>"; empty means a random one.
	Secret string
	// Deleted makes the token fail with "Proxy has been deleted.".
	Deleted bool
}

// Options configures a Server. Only Catalog and AccessURL are required.
type Options struct {
	// Catalog is the world; nil means DemoCatalog().
	Catalog *Catalog
	// AccessURL is this dev primary's dashboard URL (where browsers log in
	// and where auth-redirect lives).
	AccessURL *url.URL
	// AppHostname is the primary's own wildcard app hostname (e.g.
	// "*.apps.dev.test"); optional. Redirect targets matching it are
	// accepted by auth-redirect.
	AppHostname string
	// Proxies are the workspace proxies; none means one proxy named "dev"
	// with a random ID and secret (see ProxyToken).
	Proxies []ProxySpec
	// KeyRotation is the crypto key lifetime; 0 means coderd's 30 days.
	KeyRotation time.Duration
	// HealthInterval is how often registered proxies' /healthz-report is
	// polled; 0 means 30 s.
	HealthInterval time.Duration
	// DERPMap returns the base DERP map (the primary's own regions); nil
	// means an empty map. Healthy DERP-enabled proxies are added to it.
	DERPMap func() *tailcfg.DERPMap
	// DERP, if set, serves /derp on the primary.
	DERP http.Handler
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// HTTPClient polls proxies; nil means a client with a 5 s timeout.
	HTTPClient *http.Client
	// Unlicensed makes the primary answer every workspace proxy API call
	// as coderd does when its licence lacks workspace proxies (checked
	// before the proxy token): 403 with UnlicensedMessage.
	Unlicensed bool
}

// UnlicensedMessage is coderd's RequireFeatureMW answer for the workspace
// proxy feature on a deployment without it ("…is an Enterprise feature"
// in releases before the Premium tier).
const UnlicensedMessage = "Workspace Proxy is a Premium feature. Contact sales!"

// Server is the dev primary. Create it with New; stop it with Close.
type Server struct {
	opts        Options
	log         *slog.Logger
	now         func() time.Time
	world       *world
	keys        *keyring
	coord       *devcoord.Coordinator
	appHostname *appurl.HostnamePattern
	meshKey     string
	deployment  uuid.UUID
	handler     http.Handler
	httpClient  *http.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}

	closeOnce sync.Once
	closeErr  error

	issueCalls atomic.Int64
	checkMu    sync.Mutex

	mu       sync.Mutex
	proxies  map[uuid.UUID]*proxyState
	order    []uuid.UUID
	replicas map[uuid.UUID]*Replica
	sessions map[string]*session
	stats    []StatsReport
	health   map[uuid.UUID]ProxyHealth
}

// New validates the options and starts the server's background work (the
// proxy health poller and the coordinator).
func New(opts Options) (*Server, error) {
	if opts.AccessURL == nil || opts.AccessURL.Host == "" {
		return nil, errors.New("devprimary: Options.AccessURL is required")
	}
	if opts.Catalog == nil {
		opts.Catalog = DemoCatalog()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 30 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	w, err := newWorld(opts.Catalog)
	if err != nil {
		return nil, fmt.Errorf("devprimary: %w", err)
	}
	keys, err := newKeyring(opts.KeyRotation, opts.Now())
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:       opts,
		log:        opts.Logger.With("component", "devprimary"),
		now:        opts.Now,
		world:      w,
		keys:       keys,
		meshKey:    randomHex(32),
		deployment: uuid.New(),
		httpClient: opts.HTTPClient,
		kick:       make(chan struct{}, 1),
		proxies:    map[uuid.UUID]*proxyState{},
		replicas:   map[uuid.UUID]*Replica{},
		sessions:   map[string]*session{},
		health:     map[uuid.UUID]ProxyHealth{},
	}
	if opts.AppHostname != "" {
		p, err := appurl.CompileHostnamePattern(opts.AppHostname)
		if err != nil {
			return nil, fmt.Errorf("devprimary: Options.AppHostname: %w", err)
		}
		s.appHostname = p
	}
	specs := opts.Proxies
	if len(specs) == 0 {
		specs = []ProxySpec{{ID: uuid.New(), Name: "dev"}}
	}
	for i, p := range specs {
		if p.ID == uuid.Nil {
			return nil, fmt.Errorf("devprimary: Options.Proxies[%d]: ID is required", i)
		}
		if p.Secret == "" {
			p.Secret = randomHex(32)
		}
		if len(p.Secret) != 64 {
			return nil, fmt.Errorf("devprimary: Options.Proxies[%d]: secret must be 64 characters, got %d", i, len(p.Secret))
		}
		if _, dup := s.proxies[p.ID]; dup {
			return nil, fmt.Errorf("devprimary: Options.Proxies[%d]: duplicate ID %s", i, p.ID)
		}
		if p.Name == "" {
			p.Name = fmt.Sprintf("proxy-%d", i+1)
		}
		s.proxies[p.ID] = &proxyState{spec: p, regionSerial: int32(i + 1)}
		s.order = append(s.order, p.ID)
	}
	s.coord = devcoord.New(devcoord.Options{Logger: opts.Logger, DERPMap: s.derpMap})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.handler = s.routes()
	s.wg.Add(1)
	go s.pollHealth()
	return s, nil
}

// Handler serves every endpoint of the dev primary.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops the health poller and the coordinator. It may be called
// more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.closeErr = s.coord.Close()
	})
	return s.closeErr
}

// Coordinator is the tailnet coordinator behind the coordinate endpoints.
func (s *Server) Coordinator() *devcoord.Coordinator { return s.coord }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/buildinfo", s.handleBuildInfo)
	proxy := func(h func(http.ResponseWriter, *http.Request, *proxyState)) http.Handler {
		if s.opts.Unlicensed {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				coderhttp.WriteJSON(w, http.StatusForbidden, coderhttp.Response{Message: UnlicensedMessage})
			})
		}
		return s.requireProxy(h)
	}
	const me = "/api/v2/workspaceproxies/me/"
	mux.Handle("POST "+me+"register", proxy(s.handleRegister))
	mux.Handle("POST "+me+"deregister", proxy(s.handleDeregister))
	mux.Handle("GET "+me+"crypto-keys", proxy(s.handleCryptoKeys))
	mux.Handle("POST "+me+"issue-signed-app-token", proxy(s.handleIssue))
	mux.Handle("POST "+me+"resolve-app-owner", proxy(s.handleResolveAppOwner))
	mux.Handle("POST "+me+"app-stats", proxy(s.handleAppStats))
	mux.Handle("GET "+me+"coordinate", proxy(func(w http.ResponseWriter, r *http.Request, p *proxyState) {
		s.coord.ServeProxy(w, r, p.spec.ID)
	}))
	mux.HandleFunc("GET /api/v2/workspaceagents/me/rpc", s.handleAgentRPC)
	mux.HandleFunc("GET /api/v2/applications/auth-redirect", s.handleAuthRedirect)
	mux.HandleFunc("POST /api/v2/applications/reconnecting-pty-signed-token", s.handlePTYToken)
	mux.HandleFunc("GET /login", s.handleLoginPage)
	mux.HandleFunc("POST /login", s.handleLogin)
	mux.HandleFunc("GET /static/", s.handleStatic)
	// Dashboard pages (/@owner/workspace.agent/terminal). No method in the
	// pattern: "GET /" would conflict with "/api/" below.
	mux.HandleFunc("/", s.handleDashboard)
	if s.opts.DERP != nil {
		mux.Handle("/derp", s.opts.DERP)
		mux.Handle("/derp/", s.opts.DERP)
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, _ *http.Request) {
		coderhttp.WriteJSON(w, http.StatusNotFound, coderhttp.Response{Message: "Route not found."})
	})
	return mux
}

// buildInfo is coderd's codersdk.BuildInfoResponse.
type buildInfo struct {
	ExternalURL           string `json:"external_url"`
	Version               string `json:"version"`
	DashboardURL          string `json:"dashboard_url"`
	Telemetry             bool   `json:"telemetry"`
	WorkspaceProxy        bool   `json:"workspace_proxy"`
	AgentAPIVersion       string `json:"agent_api_version"`
	ProvisionerAPIVersion string `json:"provisioner_api_version"`
	UpgradeMessage        string `json:"upgrade_message"`
	DeploymentID          string `json:"deployment_id"`
	WebpushPublicKey      string `json:"webpush_public_key,omitempty"`
}

func (s *Server) handleBuildInfo(w http.ResponseWriter, _ *http.Request) {
	coderhttp.WriteJSON(w, http.StatusOK, buildInfo{
		ExternalURL:           "https://github.com/wsedge/wsedge",
		Version:               Version,
		DashboardURL:          s.opts.AccessURL.String(),
		AgentAPIVersion:       "2.0",
		ProvisionerAPIVersion: "1.0",
		DeploymentID:          s.deployment.String(),
	})
}

// maxBody bounds request bodies; coderd has no smaller limit that matters.
const maxBody = 4 << 20

// readJSON decodes a body like coderd's httpapi.Read, answering 400
// "Request body must be valid JSON." itself on failure.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v)
	if err != nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Request body must be valid JSON.", Detail: err.Error()})
		return false
	}
	return true
}

func internalError(w http.ResponseWriter, err error) {
	coderhttp.WriteJSON(w, http.StatusInternalServerError, coderhttp.Response{Message: "An internal server error occurred.", Detail: err.Error()})
}

// resourceNotFound is coderd's httpapi.ResourceNotFound.
func resourceNotFound(w http.ResponseWriter) {
	coderhttp.WriteJSON(w, http.StatusNotFound, coderhttp.Response{Message: "Resource not found or you do not have access to this resource"})
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("devprimary: crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// ProxyToken is the first proxy's token, "<id>:<secret>", for the
// Coder-External-Proxy-Token header.
func (s *Server) ProxyToken() string { return s.ProxyTokenOf(s.order[0]) }

// ProxyTokenOf is a proxy's token; empty for an unknown ID.
func (s *Server) ProxyTokenOf(id uuid.UUID) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxies[id]
	if p == nil {
		return ""
	}
	return p.spec.ID.String() + ":" + p.spec.Secret
}

// SetAgentConnected changes an agent's status as the issuer judges it
// (tokens for a disconnected agent are refused with 502).
func (s *Server) SetAgentConnected(agentID uuid.UUID, connected bool) error {
	a := s.world.agents[agentID]
	if a == nil {
		return fmt.Errorf("devprimary: no agent %s", agentID)
	}
	a.connected.Store(connected)
	return nil
}

// IssueCalls counts issue-signed-app-token requests (any outcome).
func (s *Server) IssueCalls() int64 { return s.issueCalls.Load() }

// SigningKey is the key coderd would sign app tokens (or encrypt API keys)
// with now.
func (s *Server) SigningKey(f tokens.Feature) (tokens.Key, error) {
	return s.keys.signing(f, s.now())
}

// Keys lists a feature's keys as crypto-keys serves them.
func (s *Server) Keys(f tokens.Feature) ([]tokens.Key, error) {
	return s.keys.list(f, s.now())
}

// RotateKeys forces a key rotation of both features now: new keys sign at
// once; old keys verify until their deletes_at.
func (s *Server) RotateKeys() error { return s.keys.rotateNow(s.now()) }

// WithdrawKey drops a key at once (fault tests: a key the primary
// withdrew before its deletes_at).
func (s *Server) WithdrawKey(f tokens.Feature, seq int32) error { return s.keys.withdraw(f, seq) }

// SessionToken returns a full-scope session token of a user (by username
// or ID): the first catalog token, else a freshly minted one.
func (s *Server) SessionToken(userNameOrID string) (string, error) {
	u := s.world.userByNameOrID(userNameOrID)
	if u == nil {
		return "", fmt.Errorf("devprimary: no user %q", userNameOrID)
	}
	for _, cu := range s.world.cat.Users {
		if cu.ID == u.ID.String() && len(cu.SessionTokens) > 0 {
			return cu.SessionTokens[0], nil
		}
	}
	return s.mintKey(u, scopeAll, s.now().Add(defaultSessionDuration)), nil
}

// hostOnly strips a port.
func hostOnly(host string) string {
	h, _, _ := strings.Cut(host, ":")
	return h
}
