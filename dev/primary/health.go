package devprimary

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Proxy health statuses, coderd's proxyhealth values.
const (
	HealthHealthy      = "ok"
	HealthUnhealthy    = "unhealthy"
	HealthUnreachable  = "unreachable"
	HealthUnregistered = "unregistered"
)

// ProxyHealth is the last judgement of one proxy (coderd's
// proxyhealth.ProxyStatus).
type ProxyHealth struct {
	Status    string
	Report    HealthReport
	CheckedAt time.Time
}

// HealthReport is the body of a proxy's /healthz-report
// (codersdk.ProxyHealthReport).
type HealthReport struct {
	Errors   []string `json:"errors"`
	Warnings []string `json:"warnings"`
}

// healthConcurrency is how many proxies coderd checks at once.
const healthConcurrency = 5

// maxHealthBody bounds what is read of a report.
const maxHealthBody = 1 << 20

// HealthReports returns the last status of every proxy.
func (s *Server) HealthReports() map[uuid.UUID]ProxyHealth {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uuid.UUID]ProxyHealth, len(s.health))
	for id, h := range s.health {
		out[id] = h
	}
	return out
}

// CheckHealth polls every proxy once now and waits for the results.
// Checks never overlap, so the last one to finish is the newest.
func (s *Server) CheckHealth(ctx context.Context) {
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	type target struct {
		id  uuid.UUID
		url string
	}
	var targets []target
	s.mu.Lock()
	for _, id := range s.order {
		p := s.proxies[id]
		u := ""
		if p.registered && !p.spec.Deleted {
			u = p.url
		}
		targets = append(targets, target{id: id, url: u})
	}
	s.mu.Unlock()

	results := make([]ProxyHealth, len(targets))
	sem := make(chan struct{}, healthConcurrency)
	var wg sync.WaitGroup
	for i, t := range targets {
		if t.url == "" {
			results[i] = ProxyHealth{Status: HealthUnregistered, CheckedAt: s.now()}
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = s.checkOne(ctx, t.url)
		}()
	}
	wg.Wait()
	s.mu.Lock()
	for i, t := range targets {
		s.health[t.id] = results[i]
	}
	s.mu.Unlock()
}

// checkOne judges one proxy as coderd does: 200 with a JSON report and no
// errors is healthy; other answers are unhealthy; no answer is
// unreachable.
func (s *Server) checkOne(ctx context.Context, base string) ProxyHealth {
	h := ProxyHealth{CheckedAt: s.now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/healthz-report", nil)
	if err != nil {
		h.Status = HealthUnreachable
		h.Report.Errors = []string{fmt.Sprintf("new request: %v", err)}
		return h
	}
	resp, err := s.httpClient.Do(req)
	if err != nil {
		h.Status = HealthUnreachable
		h.Report.Errors = []string{fmt.Sprintf("request proxy health: %v", err)}
		return h
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody))
	if err != nil {
		h.Status = HealthUnreachable
		h.Report.Errors = []string{fmt.Sprintf("read proxy health: %v", err)}
		return h
	}
	if resp.StatusCode != http.StatusOK {
		h.Status = HealthUnhealthy
		h.Report.Errors = []string{fmt.Sprintf("proxy health report returned status %d", resp.StatusCode)}
		return h
	}
	var rep HealthReport
	if err := json.Unmarshal(body, &rep); err != nil {
		h.Status = HealthUnhealthy
		h.Report.Errors = []string{fmt.Sprintf("decode proxy health report: %v", err)}
		return h
	}
	h.Report = rep
	if len(rep.Errors) > 0 {
		h.Status = HealthUnhealthy
		return h
	}
	h.Status = HealthHealthy
	return h
}

// kickHealth asks the poller for an immediate check (after register and
// deregister, as coderd does); it never blocks.
func (s *Server) kickHealth() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// pollHealth checks proxies every HealthInterval and when kicked, until
// Close.
func (s *Server) pollHealth() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
		s.CheckHealth(ctx)
		cancel()
	}
}
