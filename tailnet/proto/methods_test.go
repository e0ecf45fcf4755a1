package tailnetproto

import "testing"

// coderd routes DRPC calls by these exact strings.
func TestDRPCMethodPaths(t *testing.T) {
	want := map[string]bool{
		"/coder.tailnet.v2.Tailnet/StreamDERPMaps": true,
		"/coder.tailnet.v2.Tailnet/Coordinate":     true,
	}
	d := DRPCTailnetDescription{}
	if d.NumMethods() != len(want) {
		t.Fatalf("%d methods, want %d", d.NumMethods(), len(want))
	}
	for i := range d.NumMethods() {
		name, _, _, _, ok := d.Method(i)
		if !ok || !want[name] {
			t.Errorf("method %d = %q", i, name)
		}
	}
	if got := string(File_tailnet_proto.Package()); got != "coder.tailnet.v2" {
		t.Errorf("proto package = %q", got)
	}
}
