package doctor

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/envoyrun"
)

func TestCheckAccessURL(t *testing.T) {
	tests := []struct {
		raw    string
		status Status
		detail string
	}{
		{"https://eu.coder.example.com", Pass, "https://eu.coder.example.com"},
		{"https://eu.coder.example.com/", Pass, "https://eu.coder.example.com"},
		{"http://127.0.0.1:8080", Pass, "http://127.0.0.1:8080"},
		{"http://demo.localhost:8080", Pass, "http://demo.localhost:8080"},
		{"http://eu.coder.example.com", Warn, "(plain http)"},
		{"", Fail, "not set"},
		{"eu.coder.example.com", Fail, "scheme must be http or https"},
		{"ftp://eu.coder.example.com", Fail, "scheme must be http or https"},
		{"https://eu.coder.example.com/proxy", Fail, "must not have a path"},
		{"https://eu.coder.example.com/?x=1", Fail, "query or fragment"},
		{"https://user:pw@eu.coder.example.com", Fail, "user info"},
		{"https://:443", Fail, "no host"},
		{"https://eu.coder.example.com:0", Fail, "bad port"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			u, r := checkAccessURL(tt.raw)
			if r.Status != tt.status || !strings.Contains(r.Detail, tt.detail) {
				t.Fatalf("%s %q, want %s containing %q", r.Status, r.Detail, tt.status, tt.detail)
			}
			if (u == nil) != (tt.status == Fail) {
				t.Fatalf("url %v with status %s", u, r.Status)
			}
			if r.Status != Pass && r.Hint == "" {
				t.Fatal("no hint")
			}
			if strings.Contains(r.Detail, "pw") {
				t.Fatalf("detail leaks the password: %q", r.Detail)
			}
		})
	}
}

func TestCheckWildcard(t *testing.T) {
	httpsAccess, _ := url.Parse("https://eu.example.com")
	portAccess, _ := url.Parse("https://eu.example.com:8443")
	tests := []struct {
		name, pattern string
		access        *url.URL
		status        Status
		detail        string
	}{
		{"dot style", "*.apps.eu.example.com", httpsAccess, Pass, "(apps like <app>.apps.eu.example.com)"},
		{"dash style", "*--apps.example.com", httpsAccess, Pass, "--apps.example.com"},
		{"explicit default port", "*.apps.eu.example.com:443", httpsAccess, Pass, ""},
		{"same non-default port", "*.apps.eu.example.com:8443", portAccess, Pass, ""},
		{"empty", "", httpsAccess, Skip, "subdomain apps are disabled"},
		{"two stars", "*.*.example.com", httpsAccess, Fail, "exactly one"},
		{"scheme", "https://*.example.com", httpsAccess, Fail, "scheme"},
		{"one label", "*example", httpsAccess, Fail, "two labels"},
		{"covers the access host", "*.example.com", httpsAccess, Fail, "matches the access URL host eu.example.com"},
		{"port mismatch", "*.apps.eu.example.com", portAccess, Warn, "port 443 but the access URL uses port 8443"},
		{"no access URL", "*.apps.eu.example.com", nil, Warn, "not compared"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkWildcard(tt.pattern, tt.access)
			if r.Status != tt.status || !strings.Contains(r.Detail, tt.detail) {
				t.Fatalf("%s %q, want %s containing %q", r.Status, r.Detail, tt.status, tt.detail)
			}
			if (r.Status == Fail || r.Status == Warn) && r.Hint == "" {
				t.Fatal("no hint")
			}
		})
	}
}

func TestCheckEnvoy(t *testing.T) {
	wd, _ := os.Getwd()
	bin, err := envoyrun.FindBinary(wd)
	if err != nil {
		t.Skipf("no envoy: %v", err)
	}
	access, _ := url.Parse("https://eu.example.com")
	base := envoy.DefaultConfig()

	t.Run("missing certificate file is Envoy's complaint", func(t *testing.T) {
		c := base
		dir := t.TempDir()
		c.TLSCertFile, c.TLSKeyFile = filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key")
		r := checkEnvoy(context.Background(), Config{Envoy: &c, EnvoyBinary: bin, WildcardHostname: "*.apps.eu.example.com"}, access)
		if r.Status != Fail || !strings.Contains(r.Detail, "rejects the bootstrap") || !strings.Contains(r.Detail, "missing.key") || strings.Contains(r.Detail, "[critical]") {
			t.Fatalf("%s %q", r.Status, r.Detail)
		}
		if !strings.Contains(r.Hint, "--tls-cert") {
			t.Fatalf("hint %q", r.Hint)
		}
	})
	t.Run("invalid settings name the flag", func(t *testing.T) {
		c := base
		c.RateLimit.Burst = 5
		r := checkEnvoy(context.Background(), Config{Envoy: &c, EnvoyBinary: bin}, access)
		if r.Status != Fail || r.Hint != "fix --rate-limit-burst" {
			t.Fatalf("%s %q hint %q", r.Status, r.Detail, r.Hint)
		}
	})
	t.Run("bad wildcard reaches the envoy check as a wildcard problem", func(t *testing.T) {
		c := base
		r := checkEnvoy(context.Background(), Config{Envoy: &c, EnvoyBinary: bin, WildcardHostname: "apps.example.com"}, access)
		if r.Status != Fail || r.Hint != "fix --wildcard-hostname" {
			t.Fatalf("%s %q hint %q", r.Status, r.Detail, r.Hint)
		}
	})
	t.Run("no envoy binary is a warning", func(t *testing.T) {
		t.Setenv(envoyrun.BinEnv, filepath.Join(t.TempDir(), "no-envoy"))
		c := base
		r := checkEnvoy(context.Background(), Config{Envoy: &c}, access)
		if r.Status != Warn || !strings.Contains(r.Detail, "no envoy binary") || !strings.Contains(r.Hint, "WSEDGE_ENVOY_BIN") {
			t.Fatalf("%s %q hint %q", r.Status, r.Detail, r.Hint)
		}
	})
	t.Run("not configured", func(t *testing.T) {
		if r := checkEnvoy(context.Background(), Config{}, access); r.Status != Skip {
			t.Fatalf("%+v", r)
		}
	})
}

func TestShortVersionAndLastLine(t *testing.T) {
	if v := shortVersion("abc123/1.40.0/Clean/RELEASE/BoringSSL"); v != "1.40.0" {
		t.Fatalf("shortVersion = %q", v)
	}
	if l := lastLine("a\n[2026-11-22 22:54:38.047][26855][critical][main] [source/server/server.cc:76] the reason \n\n", nil); l != "the reason" {
		t.Fatalf("lastLine = %q", l)
	}
}

func TestTokenShape(t *testing.T) {
	tests := []struct {
		token, id string
		ok        bool
	}{
		{"0e0f6f52-5f2a-4c2b-9c59-a11ce0000001:" + strings.Repeat("a", 64), "0e0f6f52-5f2a-4c2b-9c59-a11ce0000001", true},
		{"0e0f6f52-5f2a-4c2b-9c59-a11ce0000001:short", "0e0f6f52-5f2a-4c2b-9c59-a11ce0000001", false},
		{"not-a-uuid:" + strings.Repeat("a", 64), "", false},
		{strings.Repeat("a", 64), "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		id, ok := tokenShape(tt.token)
		if id != tt.id || ok != tt.ok {
			t.Errorf("tokenShape(%q) = %q, %v; want %q, %v", tt.token, id, ok, tt.id, tt.ok)
		}
	}
}
