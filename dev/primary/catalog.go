package devprimary

import (
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/google/uuid"
	"sigs.k8s.io/yaml"
)

// Catalog is what the dev primary knows: users, workspaces with their
// agents and apps, and the deployment switches that change authorisation.
// It is read from YAML with unknown fields refused.
type Catalog struct {
	Deployment Deployment  `json:"deployment"`
	Template   Template    `json:"template"`
	Users      []User      `json:"users"`
	Workspaces []Workspace `json:"workspaces"`
}

// Deployment holds coderd's deployment-wide switches that matter to apps.
type Deployment struct {
	// DangerousAllowPathAppSharing lets path apps use their configured
	// sharing level (coderd --dangerous-allow-path-app-sharing); otherwise
	// path apps are treated as "owner".
	DangerousAllowPathAppSharing bool `json:"dangerous_allow_path_app_sharing"`
	// DangerousAllowPathAppSiteOwnerAccess lets site owners open other
	// users' path apps (--dangerous-allow-path-app-site-owner-access).
	DangerousAllowPathAppSiteOwnerAccess bool `json:"dangerous_allow_path_app_site_owner_access"`
	// DERPForceWebsockets is returned by register as derp_force_websockets.
	DERPForceWebsockets bool `json:"derp_force_websockets"`
}

// Template holds the template-level switches (one template for all
// workspaces in the dev primary).
type Template struct {
	// PathAppsAllowed, when explicitly false, refuses path-app tokens for
	// every workspace (404 "Application Not Found" with a warning). Absent
	// means allowed.
	PathAppsAllowed *bool `json:"path_apps_allowed,omitempty"`
}

// User is a Coder user.
type User struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Email    string `json:"email"`
	// Password is for the demo login page only.
	Password string `json:"password"`
	// SiteOwner gives coderd's "owner" site role.
	SiteOwner bool `json:"site_owner"`
	// SessionTokens are API keys that authenticate as this user with full
	// scope, e.g. for the Coder-Session-Token header in tests.
	SessionTokens []string `json:"session_tokens"`
}

// Workspace is a workspace with its latest build's agents.
type Workspace struct {
	ID string `json:"id"`
	// Owner is the owner's username or user ID.
	Owner string `json:"owner"`
	Name  string `json:"name"`
	// Stopped makes the latest build a "stop" transition.
	Stopped bool    `json:"stopped"`
	Agents  []Agent `json:"agents"`
	// PortShares share ports of the workspace's agents beyond the owner.
	PortShares []PortShare `json:"port_shares"`
}

// Agent is a workspace agent.
type Agent struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// AuthToken is the agent's token (a UUID, as coderd's), sent as
	// Coder-Session-Token on /api/v2/workspaceagents/me/rpc.
	AuthToken string `json:"auth_token"`
	// Connected is the agent's status as coderd would judge it; a token
	// for a disconnected agent is refused with 502.
	Connected bool  `json:"connected"`
	Apps      []App `json:"apps"`
}

// App is a workspace app.
type App struct {
	Slug string `json:"slug"`
	// URL is the app's upstream inside the workspace.
	URL string `json:"url"`
	// SharingLevel is owner (default), authenticated, organization or public.
	SharingLevel string `json:"sharing_level"`
	// CORSBehavior is simple (default) or passthru; it goes into tokens.
	CORSBehavior string `json:"cors_behavior"`
	// DevAgent is what the dev agent serves at the app's URL: http (the
	// demo page), websocket (an echo) or https (the demo page over TLS).
	// Empty: https for an https URL, http otherwise. Not a coderd field.
	DevAgent string `json:"dev_agent,omitempty"`
	// Subdomain marks the app as a subdomain app (informational: coderd
	// does not refuse the other access method when issuing).
	Subdomain bool `json:"subdomain"`
	// Healthcheck is accepted and ignored, as newer coderd ignores app
	// health when issuing.
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
}

// Healthcheck is an app's health check (ignored).
type Healthcheck struct {
	URL       string `json:"url"`
	Interval  int    `json:"interval"`
	Threshold int    `json:"threshold"`
}

// PortShare shares one port of one agent.
type PortShare struct {
	Agent string `json:"agent"`
	Port  int    `json:"port"`
	// ShareLevel is authenticated, organization or public (owner is the
	// default for unshared ports).
	ShareLevel string `json:"share_level"`
}

// Sharing levels and CORS behaviours, coderd's spellings.
const (
	SharingOwner         = "owner"
	SharingAuthenticated = "authenticated"
	SharingOrganization  = "organization"
	SharingPublic        = "public"
	CORSSimple           = "simple"
	CORSPassthru         = "passthru"
)

// ErrInvalidCatalog wraps every reason a catalog is refused.
var ErrInvalidCatalog = errors.New("invalid catalog")

//go:embed testdata/demo.yaml
var demoYAML []byte

// DemoCatalog is the embedded demo: users alice (site owner) and bob,
// alice's workspace "dev" with agent "main" and apps code (:8080,
// subdomain), echo (:8081, websocket echo) and secure (https :8443).
func DemoCatalog() *Catalog {
	c, err := ParseCatalog(demoYAML)
	if err != nil {
		// The demo is checked by a test; failing here is a build defect.
		panic(fmt.Sprintf("devprimary: embedded demo catalog: %v", err))
	}
	return c
}

// LoadCatalog reads and validates a YAML catalog file.
func LoadCatalog(path string) (*Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
	c, err := ParseCatalog(b)
	if err != nil {
		return nil, fmt.Errorf("load catalog %s: %w", path, err)
	}
	return c, nil
}

// ParseCatalog decodes YAML strictly (an unknown field is an error naming
// it) and validates the result.
func ParseCatalog(b []byte) (*Catalog, error) {
	var c Catalog
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCatalog, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// nameRE is coderd's name grammar for names that appear in subdomain app
// hostnames (users, workspaces, agents, app slugs).
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$`)

// Validate reports every problem of the catalog at once, each prefixed
// with where it is (e.g. "workspaces[0].agents[1].id").
func (c *Catalog) Validate() error {
	v := validator{ids: map[uuid.UUID]string{}}
	usernames := map[string]string{}
	tokens := map[string]string{}
	owners := map[string]uuid.UUID{}
	for i, u := range c.Users {
		at := fmt.Sprintf("users[%d]", i)
		id := v.id(at+".id", u.ID)
		v.name(at+".username", u.Username)
		if prev, ok := usernames[strings.ToLower(u.Username)]; ok && u.Username != "" {
			v.errf("%s.username: duplicate username %q (also %s)", at, u.Username, prev)
		}
		usernames[strings.ToLower(u.Username)] = at
		if u.Username == "me" {
			v.errf("%s.username: %q is reserved", at, u.Username)
		}
		for j, t := range u.SessionTokens {
			tat := fmt.Sprintf("%s.session_tokens[%d]", at, j)
			if t == "" {
				v.errf("%s: empty token", tat)
				continue
			}
			if prev, ok := tokens[t]; ok {
				v.errf("%s: duplicate token (also %s)", tat, prev)
			}
			tokens[t] = tat
		}
		if id != uuid.Nil {
			owners[strings.ToLower(u.Username)] = id
			owners[id.String()] = id
		}
	}
	wsNames := map[string]string{}
	for i, w := range c.Workspaces {
		at := fmt.Sprintf("workspaces[%d]", i)
		v.id(at+".id", w.ID)
		v.name(at+".name", w.Name)
		owner, ok := owners[strings.ToLower(w.Owner)]
		if !ok {
			v.errf("%s.owner: unknown user %q", at, w.Owner)
		}
		key := owner.String() + "/" + strings.ToLower(w.Name)
		if prev, dup := wsNames[key]; dup && ok {
			v.errf("%s.name: owner %q already has a workspace %q (%s)", at, w.Owner, w.Name, prev)
		}
		wsNames[key] = at
		if len(w.Agents) == 0 {
			v.errf("%s.agents: a workspace needs at least one agent", at)
		}
		agentNames := map[string]bool{}
		slugs := map[string]string{}
		for j, a := range w.Agents {
			aat := fmt.Sprintf("%s.agents[%d]", at, j)
			v.id(aat+".id", a.ID)
			v.name(aat+".name", a.Name)
			if agentNames[strings.ToLower(a.Name)] {
				v.errf("%s.name: duplicate agent name %q", aat, a.Name)
			}
			agentNames[strings.ToLower(a.Name)] = true
			if tok, err := uuid.Parse(a.AuthToken); err != nil {
				v.errf("%s.auth_token: must be a UUID: %v", aat, err)
			} else if prev, dup := tokens[tok.String()]; dup {
				v.errf("%s.auth_token: duplicate token (also %s)", aat, prev)
			} else {
				tokens[tok.String()] = aat + ".auth_token"
			}
			for k, app := range a.Apps {
				pat := fmt.Sprintf("%s.apps[%d]", aat, k)
				v.name(pat+".slug", app.Slug)
				if prev, dup := slugs[app.Slug]; dup {
					v.errf("%s.slug: duplicate app slug %q in the workspace (also %s)", pat, app.Slug, prev)
				}
				slugs[app.Slug] = pat
				v.appURL(pat+".url", app.URL)
				v.oneOf(pat+".sharing_level", app.SharingLevel, SharingOwner, SharingAuthenticated, SharingOrganization, SharingPublic)
				v.oneOf(pat+".cors_behavior", app.CORSBehavior, CORSSimple, CORSPassthru)
				v.oneOf(pat+".dev_agent", app.DevAgent, "http", "websocket", "https")
			}
		}
		for j, ps := range w.PortShares {
			pat := fmt.Sprintf("%s.port_shares[%d]", at, j)
			if !agentNames[strings.ToLower(ps.Agent)] {
				v.errf("%s.agent: no agent %q in the workspace", pat, ps.Agent)
			}
			if ps.Port < 1 || ps.Port > 65535 {
				v.errf("%s.port: %d is not a port (1-65535)", pat, ps.Port)
			}
			if ps.ShareLevel == "" {
				v.errf("%s.share_level: required", pat)
			}
			v.oneOf(pat+".share_level", ps.ShareLevel, SharingOwner, SharingAuthenticated, SharingOrganization, SharingPublic)
		}
	}
	return v.err()
}

type validator struct {
	errs []error
	ids  map[uuid.UUID]string
}

func (v *validator) errf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidCatalog, errors.Join(v.errs...))
}

// id parses a UUID and checks it is unique across the whole catalog.
func (v *validator) id(at, s string) uuid.UUID {
	if s == "" {
		v.errf("%s: required", at)
		return uuid.Nil
	}
	id, err := uuid.Parse(s)
	if err != nil {
		v.errf("%s: %q is not a UUID: %v", at, s, err)
		return uuid.Nil
	}
	if id == uuid.Nil {
		v.errf("%s: the nil UUID is not allowed", at)
		return uuid.Nil
	}
	if prev, ok := v.ids[id]; ok {
		v.errf("%s: duplicate id %s (also %s)", at, id, prev)
	}
	v.ids[id] = at
	return id
}

func (v *validator) name(at, s string) {
	if s == "" {
		v.errf("%s: required", at)
		return
	}
	if !nameRE.MatchString(s) {
		v.errf("%s: %q must be letters, digits and single hyphens (no leading, trailing or double hyphen)", at, s)
	}
}

func (v *validator) appURL(at, s string) {
	if s == "" {
		v.errf("%s: required", at)
		return
	}
	u, err := url.Parse(s)
	if err != nil {
		v.errf("%s: bad url %q: %v", at, s, err)
		return
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		v.errf("%s: bad url %q: scheme must be http or https", at, s)
		return
	}
	if u.Host == "" {
		v.errf("%s: bad url %q: no host", at, s)
	}
}

// oneOf accepts the empty string (the default) or one of the values.
func (v *validator) oneOf(at, s string, values ...string) {
	if s == "" {
		return
	}
	for _, x := range values {
		if s == x {
			return
		}
	}
	v.errf("%s: %q is not one of %s", at, s, strings.Join(values, ", "))
}
