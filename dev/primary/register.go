package devprimary

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"tailscale.com/tailcfg"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/coderhttp"
)

// ReplicaFreshness is how long after its last registration a replica still
// counts as a live sibling (the reference proxy re-registers every 5 s).
const ReplicaFreshness = 30 * time.Second

// Replica is a registered proxy replica. Its JSON is coderd's
// codersdk.Replica, as listed in sibling_replicas.
type Replica struct {
	ID              uuid.UUID `json:"id"`
	Hostname        string    `json:"hostname"`
	CreatedAt       time.Time `json:"created_at"`
	RelayAddress    string    `json:"relay_address"`
	RegionID        int32     `json:"region_id"`
	Error           string    `json:"error"`
	DatabaseLatency int32     `json:"database_latency"`

	ProxyID   uuid.UUID `json:"-"`
	Version   string    `json:"-"`
	UpdatedAt time.Time `json:"-"`
	// StoppedAt is set by deregister; a stopped replica ID is never
	// accepted again.
	StoppedAt time.Time `json:"-"`
}

// registerRequest is coderd's wsproxysdk.RegisterWorkspaceProxyRequest.
type registerRequest struct {
	AccessURL           string    `json:"access_url"`
	WildcardHostname    string    `json:"wildcard_hostname"`
	DerpEnabled         bool      `json:"derp_enabled"`
	DerpOnly            bool      `json:"derp_only"`
	ReplicaID           uuid.UUID `json:"replica_id"`
	ReplicaHostname     string    `json:"hostname"`
	ReplicaError        string    `json:"replica_error"`
	ReplicaRelayAddress string    `json:"replica_relay_address"`
	Version             string    `json:"version"`
}

// registerResponse is coderd's wsproxysdk.RegisterWorkspaceProxyResponse.
type registerResponse struct {
	DERPMeshKey         string           `json:"derp_mesh_key"`
	DERPRegionID        int32            `json:"derp_region_id"`
	DERPMap             *tailcfg.DERPMap `json:"derp_map"`
	DERPForceWebSockets bool             `json:"derp_force_websockets"`
	SiblingReplicas     []Replica        `json:"sibling_replicas"`
}

// deregisterRequest is coderd's wsproxysdk.DeregisterWorkspaceProxyRequest.
type deregisterRequest struct {
	ReplicaID uuid.UUID `json:"replica_id"`
}

// validateProxyURL mirrors coderd: parses, http/https, path empty or "/".
func validateProxyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Path != "/" && u.Path != "" {
		return errors.New("path must be empty or /")
	}
	return nil
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request, p *proxyState) {
	var req registerRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := validateProxyURL(req.AccessURL); err != nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "URL is invalid.", Detail: err.Error()})
		return
	}
	if req.WildcardHostname != "" {
		if _, err := appurl.CompileHostnamePattern(req.WildcardHostname); err != nil {
			coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Wildcard URL is invalid.", Detail: err.Error()})
			return
		}
	}
	if req.ReplicaID == uuid.Nil {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "Replica ID is invalid."})
		return
	}
	if req.DerpOnly && !req.DerpEnabled {
		coderhttp.WriteJSON(w, http.StatusBadRequest, coderhttp.Response{Message: "DerpOnly cannot be true when DerpEnabled is false."})
		return
	}
	regionID := s.startingRegionID() + p.regionSerial
	now := s.now().UTC()

	s.mu.Lock()
	if rep, ok := s.replicas[req.ReplicaID]; ok && !rep.StoppedAt.IsZero() {
		s.mu.Unlock()
		internalError(w, fmt.Errorf("replica %s is marked stopped", rep.ID))
		return
	}
	p.registered = true
	p.url = req.AccessURL
	p.wildcard = req.WildcardHostname
	p.derpEnabled = req.DerpEnabled
	p.derpOnly = req.DerpOnly
	p.version = req.Version
	rep, ok := s.replicas[req.ReplicaID]
	if !ok {
		rep = &Replica{ID: req.ReplicaID, CreatedAt: now}
		s.replicas[req.ReplicaID] = rep
	}
	rep.ProxyID = p.spec.ID
	rep.Hostname = req.ReplicaHostname
	rep.RelayAddress = req.ReplicaRelayAddress
	rep.RegionID = regionID
	rep.Error = req.ReplicaError
	rep.Version = req.Version
	rep.UpdatedAt = now
	siblings := make([]Replica, 0)
	for _, o := range s.replicas {
		if o.ID == rep.ID || o.RegionID != regionID || !o.StoppedAt.IsZero() || now.Sub(o.UpdatedAt) > ReplicaFreshness {
			continue
		}
		siblings = append(siblings, *o)
	}
	s.mu.Unlock()
	slices.SortFunc(siblings, func(a, b Replica) int { return a.CreatedAt.Compare(b.CreatedAt) })

	resp := registerResponse{
		DERPRegionID:        regionID,
		DERPMap:             s.derpMap(),
		DERPForceWebSockets: s.world.cat.Deployment.DERPForceWebsockets,
		SiblingReplicas:     siblings,
	}
	if req.DerpEnabled {
		resp.DERPMeshKey = s.meshKey
	}
	coderhttp.WriteJSON(w, http.StatusCreated, resp)
	s.kickHealth()
}

func (s *Server) handleDeregister(w http.ResponseWriter, r *http.Request, _ *proxyState) {
	var req deregisterRequest
	if !readJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	rep, ok := s.replicas[req.ReplicaID]
	switch {
	case !ok:
		s.mu.Unlock()
		resourceNotFound(w)
		return
	case !rep.StoppedAt.IsZero():
		s.mu.Unlock()
		internalError(w, fmt.Errorf("replica %s is already marked stopped", rep.ID))
		return
	}
	rep.StoppedAt = s.now().UTC()
	rep.UpdatedAt = rep.StoppedAt
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	s.kickHealth()
}

// Replicas lists every replica ever registered (stopped ones included),
// oldest first.
func (s *Server) Replicas() []Replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Replica, 0, len(s.replicas))
	for _, r := range s.replicas {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Replica) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

func (s *Server) baseDERPMap() *tailcfg.DERPMap {
	if s.opts.DERPMap != nil {
		if m := s.opts.DERPMap(); m != nil {
			return m.Clone()
		}
	}
	return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{}}
}

// startingRegionID is coderd's: the largest base region ID plus 2000,
// rounded up to a multiple of 10000.
func (s *Server) startingRegionID() int32 {
	largest := 0
	for id := range s.baseDERPMap().Regions {
		largest = max(largest, id)
	}
	n := largest + 2000
	if n%10000 != 0 {
		n += 10000 - n%10000
	}
	return int32(n)
}

// derpMap is the deployment's DERP map: the base map plus one region for
// each healthy, DERP-enabled proxy (coderd's construction). Upstream
// tailcfg has no ForceHTTP/EmbeddedRelay (Coder's fork does), so those
// fork-only fields are absent from derp_map; the newest proxy ignores
// derp_map and uses the coordinator's DERP map stream instead.
func (s *Server) derpMap() *tailcfg.DERPMap {
	m := s.baseDERPMap()
	if m.Regions == nil {
		m.Regions = map[int]*tailcfg.DERPRegion{}
	}
	start := s.startingRegionID()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.order {
		p := s.proxies[id]
		if !p.registered || !p.derpEnabled || p.spec.Deleted || s.health[id].Status != HealthHealthy {
			continue
		}
		u, err := url.Parse(p.url)
		if err != nil {
			continue
		}
		port := 443
		if u.Scheme == "http" {
			port = 80
		}
		if u.Port() != "" {
			port, _ = strconv.Atoi(u.Port())
		}
		regionID := int(start + p.regionSerial)
		m.Regions[regionID] = &tailcfg.DERPRegion{
			RegionID:   regionID,
			RegionCode: "coder_" + strings.ToLower(p.spec.Name),
			RegionName: p.spec.Name,
			Nodes: []*tailcfg.DERPNode{{
				Name:     fmt.Sprintf("%da", regionID),
				RegionID: regionID,
				HostName: u.Hostname(),
				DERPPort: port,
				STUNPort: -1,
			}},
		}
	}
	return m
}
