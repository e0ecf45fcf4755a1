package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestAccessLogErrorsOnly: as shipped (--access-log=errors) the edge's
// access log has a line for a refused request (a workspace that does not
// exist) and none for a served one.
func TestAccessLogErrorsOnly(t *testing.T) {
	fp := startEdge(t, WithDev())
	session := fp.newSession(t)
	c := fp.plainClient(t)
	ok := fetch(c, "http://"+codeHost+"/echo?marker=served", http.Header{"Coder-Session-Token": {session}})
	if ok.status != http.StatusOK {
		t.Fatalf("app request: %s", ok)
	}
	refused := fetch(c, "http://"+accessHost+"/@nobody/nowhere.main/apps/code/", http.Header{"Coder-Session-Token": {session}})
	if refused.status < 400 {
		t.Fatalf("request for a workspace that does not exist: %s, want a refusal", refused)
	}

	var lines []map[string]any
	waitFor(t, 15*time.Second, "the refused request's access log line", func() (bool, string) {
		b, _ := os.ReadFile(fp.dev.Envoy.StdoutPath())
		lines = lines[:0]
		found := false
		for _, l := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				continue
			}
			lines = append(lines, m)
			if m["path"] == "/@nobody/nowhere.main/apps/code/" && m["status"] == float64(refused.status) {
				found = true
			}
		}
		return found, string(b)
	})
	for _, m := range lines {
		if s, _ := m["status"].(float64); s < 400 && m["response_flags"] == "-" {
			t.Errorf("access log has a line for a served request: %v", m)
		}
	}
}
