package derp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// CheckPeers probes every meshed sibling's /derp/latency-check (each
// attempt bounded by CheckTimeout, CheckAttempts attempts CheckRetryDelay
// apart) and returns the replica_error to send on the next registration:
// empty when all answered, otherwise "Failed to dial peers: " followed by
// one "relay <hostname> (<address>): <error>" per unreachable sibling,
// joined by ", " — coderd's shape, byte for byte (the hostname is the one
// the sibling registered with, SetSiblings; empty if unknown, as coderd
// would print it).
func (s *Server) CheckPeers(ctx context.Context) string {
	addrs := s.MeshPeers()
	if len(addrs) == 0 {
		return ""
	}
	var (
		mu     sync.Mutex
		failed = make(map[string]error)
		wg     sync.WaitGroup
	)
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.checkPeer(ctx, a); err != nil {
				mu.Lock()
				failed[a] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) == 0 {
		return ""
	}
	s.mu.Lock()
	names := s.hostnames
	s.mu.Unlock()
	parts := make([]string, 0, len(failed))
	for _, a := range addrs {
		if err := failed[a]; err != nil {
			parts = append(parts, fmt.Sprintf("relay %s (%s): %s", names[a], a, err))
		}
	}
	return "Failed to dial peers: " + strings.Join(parts, ", ")
}

func (s *Server) checkPeer(ctx context.Context, relay string) error {
	u, err := parseRelay(relay)
	if err != nil {
		return err
	}
	target := u.ResolveReference(&url.URL{Path: LatencyCheckPath}).String()
	var last error
	for attempt := 0; attempt < s.opts.CheckAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.opts.After(s.opts.CheckRetryDelay):
			}
		}
		if last = s.probe(ctx, target); last == nil {
			return nil
		}
		s.log.Debug("derp: sibling latency check failed", "relay_address", relay, "attempt", attempt+1, "error", last)
	}
	return last
}

func (s *Server) probe(ctx context.Context, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	res, err := s.checkHC.Do(req)
	if err != nil {
		return err
	}
	// Like coderd's replica check, any HTTP answer means the sibling is
	// reachable; only transport failures count.
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4096))
	return res.Body.Close()
}
