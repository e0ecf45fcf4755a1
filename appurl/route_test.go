package appurl

import (
	"net/url"
	"testing"
)

// TestIsAppHost: the hosts Coder's subdomain-app handler answers are every
// host the wildcard matches — apps, the logout host, malformed app names —
// and no other; Route agrees.
func TestIsAppHost(t *testing.T) {
	access, dash := &url.URL{Scheme: "https", Host: "proxy.example.com"}, &url.URL{Scheme: "https", Host: "coder.example.com"}
	rt, err := NewRouter(access, dash, "*.apps.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"code--main--dev--alice.apps.example.com":      true,
		"CODE--main--dev--alice.apps.example.com:443":  true,
		"coder-logout.apps.example.com":                true,
		"not--an--app.apps.example.com":                true,
		"proxy.example.com":                            false,
		"coder.example.com":                            false,
		"apps.example.com":                             false,
		"code--main--dev--alice.apps.example.com.evil": false,
		"": false,
	} {
		if got := rt.IsAppHost(host); got != want {
			t.Errorf("IsAppHost(%q) = %v, want %v", host, got, want)
		}
		r, _ := rt.Route(host, "/")
		if onApp := r.Kind == KindSubdomainApp || r.Kind == KindLogout; onApp != want {
			t.Errorf("Route(%q) kind %v, IsAppHost %v", host, r.Kind, want)
		}
	}
	none, err := NewRouter(access, dash, "")
	if err != nil {
		t.Fatal(err)
	}
	if none.IsAppHost("code--main--dev--alice.apps.example.com") {
		t.Error("without a wildcard hostname, no host is an app host")
	}
}
