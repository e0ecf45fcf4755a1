package devprimary

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
)

// world is the catalog resolved into linked records for lookups. It is
// immutable after newWorld, except for each agent's connected flag.
type world struct {
	cat            *Catalog
	usersByID      map[uuid.UUID]*user
	usersByName    map[string]*user // lower-cased username
	sessionTokens  map[string]*user
	workspaces     map[uuid.UUID]*workspace
	agents         map[uuid.UUID]*agent
	agentsByToken  map[uuid.UUID]*agent
	pathAppsDenied bool
}

type user struct {
	ID        uuid.UUID
	Username  string
	Email     string
	Password  string
	SiteOwner bool
}

type workspace struct {
	ID         uuid.UUID
	Owner      *user
	Name       string
	Stopped    bool
	Agents     []*agent
	portShares map[string]string // "<agent name>/<port>" → level
}

type agent struct {
	ID   uuid.UUID
	Name string
	// connected starts from the catalog; SetAgentConnected changes it.
	connected atomic.Bool
	Workspace *workspace
	Apps      []*app
}

type app struct {
	Slug         string
	URL          string
	SharingLevel string
	CORSBehavior string
	Agent        *agent
}

func newWorld(c *Catalog) (*world, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w := &world{
		cat:           c,
		usersByID:     map[uuid.UUID]*user{},
		usersByName:   map[string]*user{},
		sessionTokens: map[string]*user{},
		workspaces:    map[uuid.UUID]*workspace{},
		agents:        map[uuid.UUID]*agent{},
		agentsByToken: map[uuid.UUID]*agent{},
	}
	if c.Template.PathAppsAllowed != nil && !*c.Template.PathAppsAllowed {
		w.pathAppsDenied = true
	}
	for _, cu := range c.Users {
		u := &user{ID: uuid.MustParse(cu.ID), Username: cu.Username, Email: cu.Email, Password: cu.Password, SiteOwner: cu.SiteOwner}
		w.usersByID[u.ID] = u
		w.usersByName[strings.ToLower(u.Username)] = u
		for _, t := range cu.SessionTokens {
			w.sessionTokens[t] = u
		}
	}
	for _, cw := range c.Workspaces {
		owner := w.userByNameOrID(cw.Owner)
		ws := &workspace{ID: uuid.MustParse(cw.ID), Owner: owner, Name: cw.Name, Stopped: cw.Stopped, portShares: map[string]string{}}
		for _, ca := range cw.Agents {
			a := &agent{ID: uuid.MustParse(ca.ID), Name: ca.Name, Workspace: ws}
			a.connected.Store(ca.Connected)
			for _, capp := range ca.Apps {
				a.Apps = append(a.Apps, &app{
					Slug:         capp.Slug,
					URL:          capp.URL,
					SharingLevel: orDefault(capp.SharingLevel, SharingOwner),
					CORSBehavior: orDefault(capp.CORSBehavior, CORSSimple),
					Agent:        a,
				})
			}
			ws.Agents = append(ws.Agents, a)
			w.agents[a.ID] = a
			w.agentsByToken[uuid.MustParse(ca.AuthToken)] = a
		}
		for _, ps := range cw.PortShares {
			ws.portShares[strings.ToLower(ps.Agent)+"/"+strconv.Itoa(ps.Port)] = ps.ShareLevel
		}
		w.workspaces[ws.ID] = ws
	}
	return w, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// userByNameOrID looks a user up as coderd does: a UUID is an ID, anything
// else a username (case-insensitive).
func (w *world) userByNameOrID(s string) *user {
	if id, err := uuid.Parse(s); err == nil {
		return w.usersByID[id]
	}
	return w.usersByName[strings.ToLower(s)]
}

// Lookup failures, mapped to coderd's pages by the issuer.
var (
	errNotFound         = errors.New("not found")
	errWorkspaceStopped = errors.New("stopped workspace")
)

// resolved is an app request resolved against the catalog (coderd's
// databaseRequest).
type resolved struct {
	Owner     *user
	Workspace *workspace
	Agent     *agent
	// AppURL is nil for terminals.
	AppURL       *url.URL
	SharingLevel string
	CORSBehavior string
}

// resolve finds the user, workspace, agent and app of a normalised,
// checked request, in coderd's order and with its rules: the latest build
// being a stop is reported before anything about agents or apps; a slug
// app's agent is the app's own agent; a port needs a subdomain request and
// an agent (implicit when there is only one).
func (w *world) resolve(r appurl.Request) (*resolved, error) {
	if r.AccessMethod == appurl.AccessMethodTerminal {
		id, err := uuid.Parse(r.AgentNameOrID)
		if err != nil {
			return nil, fmt.Errorf("invalid agent name or ID %q, must be a UUID for terminal requests: %w", r.AgentNameOrID, err)
		}
		a := w.agents[id]
		if a == nil {
			return nil, fmt.Errorf("get workspace agent %q: %w", id, errNotFound)
		}
		return &resolved{Owner: a.Workspace.Owner, Workspace: a.Workspace, Agent: a, SharingLevel: SharingOwner}, nil
	}
	u := w.userByNameOrID(r.UsernameOrID)
	if u == nil {
		return nil, fmt.Errorf("get user %q: %w", r.UsernameOrID, errNotFound)
	}
	ws := w.workspaceOf(u, r.WorkspaceNameOrID)
	if ws == nil {
		return nil, fmt.Errorf("get workspace %q: %w", r.WorkspaceNameOrID, errNotFound)
	}
	if ws.Stopped {
		return nil, errWorkspaceStopped
	}
	res := &resolved{Owner: u, Workspace: ws}
	agentNameOrID := r.AgentNameOrID
	var appURL string
	if port, https, isPort := appurl.PortInfo(r.AppSlugOrPort); isPort {
		if r.AccessMethod != appurl.AccessMethodSubdomain {
			return nil, errors.New("port-based URLs are only supported for subdomain-based applications")
		}
		if agentNameOrID == "" {
			if len(ws.Agents) != 1 {
				return nil, errors.New("port specified with no agent, but multiple agents exist in the workspace")
			}
			agentNameOrID = ws.Agents[0].ID.String()
		}
		scheme := "http"
		if https {
			scheme = "https"
		}
		appURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
		res.SharingLevel = SharingOwner
		agentName := agentNameOrID
		if id, err := uuid.Parse(agentNameOrID); err == nil {
			a := w.agents[id]
			if a == nil || a.Workspace != ws {
				return nil, fmt.Errorf("get workspace agent %q: %w", agentNameOrID, errNotFound)
			}
			agentName = a.Name
		}
		if lvl, ok := ws.portShares[strings.ToLower(agentName)+"/"+strconv.Itoa(int(port))]; ok {
			res.SharingLevel = lvl
		}
		res.CORSBehavior = CORSSimple
	} else {
		for _, a := range ws.Agents {
			for _, ap := range a.Apps {
				if ap.Slug == r.AppSlugOrPort && appURL == "" {
					agentNameOrID = a.ID.String()
					appURL = ap.URL
					res.SharingLevel = ap.SharingLevel
					res.CORSBehavior = ap.CORSBehavior
				}
			}
		}
		if appURL == "" {
			return nil, fmt.Errorf("no app found with slug %q: %w", r.AppSlugOrPort, errNotFound)
		}
	}
	if id, err := uuid.Parse(agentNameOrID); err == nil {
		for _, a := range ws.Agents {
			if a.ID == id {
				res.Agent = a
			}
		}
	} else if agentNameOrID == "" && len(ws.Agents) == 1 {
		res.Agent = ws.Agents[0]
	} else {
		for _, a := range ws.Agents {
			if a.Name == agentNameOrID {
				res.Agent = a
			}
		}
	}
	if res.Agent == nil {
		return nil, fmt.Errorf("no agent found with name %q: %w", r.AgentNameOrID, errNotFound)
	}
	parsed, err := url.Parse(appURL)
	if err != nil {
		return nil, fmt.Errorf("parse app URL %q: %w", appURL, err)
	}
	res.AppURL = parsed
	return res, nil
}

// workspaceOf finds a workspace of the user by ID or (case-insensitive)
// name.
func (w *world) workspaceOf(u *user, nameOrID string) *workspace {
	if id, err := uuid.Parse(nameOrID); err == nil {
		return w.workspaces[id]
	}
	for _, ws := range w.workspaces {
		if ws.Owner == u && strings.EqualFold(ws.Name, nameOrID) {
			return ws
		}
	}
	return nil
}
