package coordinate_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"github.com/wsedge/wsedge/tailnet"
	"github.com/wsedge/wsedge/tailnet/coordinate"
	tailnetproto "github.com/wsedge/wsedge/tailnet/proto"
)

func sampleNode() tailnet.NodeInfo {
	return tailnet.NodeInfo{
		ID:                  1234567,
		AsOf:                time.Date(2026, 11, 22, 18, 0, 0, 123000000, time.UTC),
		Key:                 key.NewNode().Public(),
		DiscoKey:            key.NewDisco().Public(),
		PreferredDERP:       999,
		DERPLatency:         map[string]float64{"999-v4": 0.0021},
		DERPForcedWebsocket: map[int]string{999: "no Upgrade: DERP"},
		Addresses:           []netip.Prefix{netip.MustParsePrefix("fd7a:115c:a1e0:12d3:a456:4266:1417:4000/128")},
		AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("fd7a:115c:a1e0:12d3:a456:4266:1417:4000/128")},
		Endpoints:           []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:41641"), netip.MustParseAddrPort("[::1]:41641")},
	}
}

func TestNodeRoundTripThroughWire(t *testing.T) {
	ni := sampleNode()
	pn, err := coordinate.NodeToProto(ni)
	if err != nil {
		t.Fatal(err)
	}
	// Encodings coderd and Coder clients use.
	raw := ni.Key.AppendTo(nil) // the 32 raw bytes
	if want := append([]byte("np"), raw...); len(raw) != 32 || !bytes.Equal(pn.Key, want) {
		t.Errorf("key = %x, want \"np\"+32 raw bytes %x", pn.Key, want)
	}
	if !strings.HasPrefix(pn.Disco, "discokey:") || len(pn.Disco) != len("discokey:")+64 {
		t.Errorf("disco = %q, want discokey:<64 hex>", pn.Disco)
	}
	if got, want := pn.Addresses, []string{"fd7a:115c:a1e0:12d3:a456:4266:1417:4000/128"}; !reflect.DeepEqual(got, want) {
		t.Errorf("addresses = %q, want %q", got, want)
	}
	if got, want := pn.Endpoints, []string{"127.0.0.1:41641", "[::1]:41641"}; !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints = %q, want %q", got, want)
	}
	wire, err := proto.Marshal(pn)
	if err != nil {
		t.Fatal(err)
	}
	var back tailnetproto.Node
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	got, err := coordinate.NodeFromProto(&back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ni) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, ni)
	}
}

func TestNodeFromProtoRejectsBadFields(t *testing.T) {
	good, err := coordinate.NodeToProto(sampleNode())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field  string
		mutate func(*tailnetproto.Node)
	}{
		{"key", func(n *tailnetproto.Node) { n.Key = n.Key[:10] }},
		{"key", func(n *tailnetproto.Node) { n.Key = append([]byte("xx"), n.Key[2:]...) }},
		{"disco", func(n *tailnetproto.Node) { n.Disco = "nodekey:00" }},
		{"addresses", func(n *tailnetproto.Node) { n.Addresses = []string{"fd7a::1"} }},
		{"allowed_ips", func(n *tailnetproto.Node) { n.AllowedIps = []string{"nope"} }},
		{"endpoints", func(n *tailnetproto.Node) { n.Endpoints = []string{"127.0.0.1"} }},
	} {
		n := proto.Clone(good).(*tailnetproto.Node)
		tc.mutate(n)
		_, err := coordinate.NodeFromProto(n)
		var ne *coordinate.NodeError
		if !errors.As(err, &ne) || ne.Field != tc.field || !errors.Is(err, coordinate.ErrInvalidNode) {
			t.Errorf("%s: got %v, want a NodeError for that field wrapping ErrInvalidNode", tc.field, err)
		}
	}
	if _, err := coordinate.NodeFromProto(nil); !errors.Is(err, coordinate.ErrInvalidNode) {
		t.Errorf("nil node: got %v", err)
	}
}

// The tags below follow from the field numbers and wire types of
// tailnet.proto (docs/protocol.md#coordination); if a number changed, coderd would misread us.
func TestWireBytesOfRequests(t *testing.T) {
	id, _ := hex.DecodeString("123e4567e89b12d3a456426614174000")
	cases := []struct {
		name string
		msg  proto.Message
		want string
	}{
		{"add_tunnel", &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: id}}, "1a120a10" + hex.EncodeToString(id)},
		{"remove_tunnel", &tailnetproto.CoordinateRequest{RemoveTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: id}}, "22120a10" + hex.EncodeToString(id)},
		{"disconnect", &tailnetproto.CoordinateRequest{Disconnect: &tailnetproto.CoordinateRequest_Disconnect{}}, "1200"},
		{"ready_for_handshake", &tailnetproto.CoordinateRequest{ReadyForHandshake: []*tailnetproto.CoordinateRequest_ReadyForHandshake{{Id: id}}}, "2a120a10" + hex.EncodeToString(id)},
		{"update_self derp", &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{PreferredDerp: 999}}}, "0a050a0328e707"},
		{"peer update lost", &tailnetproto.CoordinateResponse{PeerUpdates: []*tailnetproto.CoordinateResponse_PeerUpdate{{Id: id, Kind: tailnetproto.CoordinateResponse_PeerUpdate_LOST, Reason: "lost"}}}, "0a1a0a10" + hex.EncodeToString(id) + "180322046c6f7374"},
		{"ready kind", &tailnetproto.CoordinateResponse{PeerUpdates: []*tailnetproto.CoordinateResponse_PeerUpdate{{Kind: tailnetproto.CoordinateResponse_PeerUpdate_READY_FOR_HANDSHAKE}}}, "0a021804"},
		{"error", &tailnetproto.CoordinateResponse{Error: "x"}, "120178"},
	}
	for _, tc := range cases {
		b, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != tc.want {
			t.Errorf("%s: wire %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestDERPMapRoundTrip(t *testing.T) {
	m := &tailcfg.DERPMap{
		HomeParams: &tailcfg.DERPHomeParams{RegionScore: map[int]float64{999: 0.5}},
		Regions: map[int]*tailcfg.DERPRegion{
			999: {RegionID: 999, RegionCode: "coder", RegionName: "Coder Embedded Relay", NoMeasureNoHome: true, Nodes: []*tailcfg.DERPNode{{
				Name: "999a", RegionID: 999, HostName: "127.0.0.1", CertName: "c", IPv4: "127.0.0.1", IPv6: "::1",
				STUNPort: -1, STUNOnly: false, DERPPort: 3000, InsecureForTests: true, STUNTestIP: "127.0.0.2", CanPort80: true,
			}}},
		},
	}
	pm := coordinate.DERPMapToProto(m)
	wire, err := proto.Marshal(pm)
	if err != nil {
		t.Fatal(err)
	}
	var back tailnetproto.DERPMap
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	if got := coordinate.DERPMapFromProto(&back); !reflect.DeepEqual(got, m) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got.Regions[999], m.Regions[999])
	}
	if back.Regions[999].Nodes[0].StunPort != -1 || !back.Regions[999].Avoid {
		t.Errorf("stun_port/avoid not carried: %+v", back.Regions[999])
	}
	// coderd always sends home_params; Coder clients dereference it.
	if p := coordinate.DERPMapToProto(&tailcfg.DERPMap{}); p.HomeParams == nil {
		t.Error("home_params missing for a map without HomeParams")
	}
	if coordinate.DERPMapFromProto(&tailnetproto.DERPMap{}) == nil {
		t.Error("empty map decoded to nil")
	}
}
