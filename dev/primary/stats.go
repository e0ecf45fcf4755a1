package devprimary

import (
	"net/http"
	"time"

	"github.com/google/uuid"
)

// StatsReport is one app usage report, coderd's workspaceapps.StatsReport.
type StatsReport struct {
	UserID           uuid.UUID `json:"user_id"`
	WorkspaceID      uuid.UUID `json:"workspace_id"`
	AgentID          uuid.UUID `json:"agent_id"`
	AccessMethod     string    `json:"access_method"`
	SlugOrPort       string    `json:"slug_or_port"`
	SessionID        uuid.UUID `json:"session_id"`
	SessionStartedAt time.Time `json:"session_started_at"`
	SessionEndedAt   time.Time `json:"session_ended_at"`
	Requests         int       `json:"requests"`
}

// appStatsRequest is coderd's wsproxysdk.ReportAppStatsRequest.
type appStatsRequest struct {
	Stats []StatsReport `json:"stats"`
}

// maxStoredStats bounds the kept reports; the oldest go first.
const maxStoredStats = 100000

func (s *Server) handleAppStats(w http.ResponseWriter, r *http.Request, _ *proxyState) {
	var req appStatsRequest
	if !readJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	s.stats = append(s.stats, req.Stats...)
	if over := len(s.stats) - maxStoredStats; over > 0 {
		s.stats = append([]StatsReport(nil), s.stats[over:]...)
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// AppStats returns every stored report in arrival order.
func (s *Server) AppStats() []StatsReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]StatsReport(nil), s.stats...)
}
