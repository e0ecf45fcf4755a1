package coordinate

import (
	"context"
	"fmt"
	"sync"

	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

// session is one live Coordinate stream. Requests are queued without
// blocking (callers may hold locks) and written in order by sendLoop, the
// only goroutine that calls Send on the stream.
type session struct {
	ctx   context.Context
	coord tailnetproto.DRPCTailnet_CoordinateClient

	mu    sync.Mutex
	queue []*tailnetproto.CoordinateRequest
	wake  chan struct{}
}

func newSession(ctx context.Context, coord tailnetproto.DRPCTailnet_CoordinateClient) *session {
	return &session{ctx: ctx, coord: coord, wake: make(chan struct{}, 1)}
}

func (s *session) enqueue(req *tailnetproto.CoordinateRequest) {
	s.mu.Lock()
	s.queue = append(s.queue, req)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *session) sendLoop() error {
	for {
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-s.wake:
		}
		if err := s.ctx.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, req := range q {
			if err := s.coord.Send(req); err != nil {
				return fmt.Errorf("coordinate send: %w", err)
			}
		}
	}
}

func addTunnelReq(id [16]byte) *tailnetproto.CoordinateRequest {
	return &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: uuidBytes(id)}}
}

func removeTunnelReq(id [16]byte) *tailnetproto.CoordinateRequest {
	return &tailnetproto.CoordinateRequest{RemoveTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: uuidBytes(id)}}
}

func updateSelfReq(n *tailnetproto.Node) *tailnetproto.CoordinateRequest {
	return &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: n}}
}

func disconnectReq() *tailnetproto.CoordinateRequest {
	return &tailnetproto.CoordinateRequest{Disconnect: &tailnetproto.CoordinateRequest_Disconnect{}}
}
