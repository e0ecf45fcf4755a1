package coordinate_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wsedge/wsedge/tailnet/coordinate"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

// Whatever a coordinator sends, decoding must fail cleanly, never panic, and
// what decodes must encode back to an equivalent node.
func FuzzNodeFromWire(f *testing.F) {
	pn, _ := coordinate.NodeToProto(sampleNode())
	seed, _ := proto.Marshal(pn)
	f.Add(seed)
	f.Add([]byte{0x1a, 0x02, 'n', 'p'})
	f.Add([]byte{0x42, 0x03, 'x', '/', '9'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var n tailnetproto.Node
		if proto.Unmarshal(b, &n) != nil {
			return
		}
		ni, err := coordinate.NodeFromProto(&n)
		if err != nil {
			return
		}
		back, err := coordinate.NodeToProto(ni)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := coordinate.NodeFromProto(back)
		if err != nil || again.Key != ni.Key || again.DiscoKey != ni.DiscoKey || len(again.Endpoints) != len(ni.Endpoints) {
			t.Fatalf("second round trip differs: %v", err)
		}
		var dm tailnetproto.DERPMap
		if proto.Unmarshal(b, &dm) == nil {
			_ = coordinate.DERPMapFromProto(&dm)
		}
	})
}
