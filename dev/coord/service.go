package devcoord

import (
	"errors"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/wsedge/wsedge/tailnet/coordinate"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

type identityKey struct{}

// identity is who is on the other end of a connection, fixed at the HTTP
// layer before the DRPC server starts.
type identity struct {
	id   uuid.UUID
	name string
	kind string
	auth auth
}

// service implements tailnetproto.DRPCTailnetServer.
type service struct {
	c *Coordinator
}

func (s *service) Coordinate(stream tailnetproto.DRPCTailnet_CoordinateStream) error {
	ctx := stream.Context()
	who, ok := ctx.Value(identityKey{}).(identity)
	if !ok {
		_ = stream.Close()
		return errors.New("no stream identity")
	}
	p := &peer{
		id:    who.id,
		name:  who.name,
		kind:  who.kind,
		auth:  who.auth,
		log:   s.c.log.With("peer_id", who.id, "peer_kind", who.kind),
		resps: make(chan *tailnetproto.CoordinateResponse, responseBuffer),
		sent:  map[uuid.UUID]*tailnetproto.Node{},
	}
	if err := s.c.initPeer(p); err != nil {
		p.log.Debug("devcoord: coordinate refused", "error", err)
		_ = stream.Close()
		return nil
	}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			req, err := stream.Recv()
			if err != nil {
				break
			}
			if err := s.c.handleRequest(p, req); err != nil {
				if !errors.Is(err, errAlreadyRemoved) && !errors.Is(err, errClosed) {
					p.log.Warn("devcoord: bad coordinate request", "error", err)
				}
				break
			}
		}
		s.c.lostPeer(p)
	}()
	// Responses until the peer is removed (disconnect, lost, overwritten,
	// coordinator closed): closing the stream then hangs up on the client.
	func() {
		for {
			select {
			case <-ctx.Done():
				return
			case resp, ok := <-p.resps:
				if !ok {
					return
				}
				if err := stream.Send(resp); err != nil {
					return
				}
			}
		}
	}()
	_ = stream.Close()
	<-recvDone
	return nil
}

func (s *service) StreamDERPMaps(_ *tailnetproto.StreamDERPMapsRequest, stream tailnetproto.DRPCTailnet_StreamDERPMapsStream) error {
	defer func() { _ = stream.Close() }()
	ctx := stream.Context()
	var last *tailnetproto.DERPMap
	for {
		m, changed := s.c.currentDERPMap()
		if m != nil {
			pm := coordinate.DERPMapToProto(m)
			if last == nil || !proto.Equal(last, pm) {
				if err := stream.Send(pm); err != nil {
					return err
				}
				last = pm
			}
		}
		t := time.NewTimer(s.c.derpInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}
