package tailnet

import (
	"net/netip"
	"testing"

	"github.com/google/uuid"
)

func TestAgentAddr(t *testing.T) {
	id := uuid.MustParse("123e4567-e89b-12d3-a456-426614174000")
	for _, tc := range []struct {
		name string
		got  netip.Addr
		want string
	}{
		{"service prefix", AgentAddr(id), "fd7a:115c:a1e0:12d3:a456:4266:1417:4000"},
		{"coder prefix", AgentAddrIn(CoderPrefix, id), "fd60:627a:a42b:12d3:a456:4266:1417:4000"},
	} {
		if tc.got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: got %v, want %s", tc.name, tc.got, tc.want)
		}
	}
	if !ServicePrefix.Contains(AgentAddr(id)) {
		t.Errorf("AgentAddr outside ServicePrefix")
	}
}
