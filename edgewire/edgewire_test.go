package edgewire

import "testing"

func TestIsInternalHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"x-wsedge-app-token":     true,
		"X-Wsedge-App-Token":     true,
		"X-WSEDGE-":              true,
		"x-wsedge":               false,
		"x-wsedg":                false,
		"":                       false,
		"x-forwarded-for":        false,
		"xx-wsedge-app-token":    false,
		"sec-x-wsedge-app-token": false,
	} {
		if got := IsInternalHeader(name); got != want {
			t.Errorf("IsInternalHeader(%q) = %v, want %v", name, got, want)
		}
	}
}
