package appurl

import (
	"strings"
	"testing"
)

// BenchmarkSubdomainHostnameBaseline is the floor under
// BenchmarkSubdomainHostname: cutting the same host at its first dot and
// splitting the label at "--", no validation.
func BenchmarkSubdomainHostnameBaseline(b *testing.B) {
	host := "pre---code--main--dev--alice.apps.example.com"
	b.ReportAllocs()
	for b.Loop() {
		label, rest, ok := strings.Cut(host, ".")
		if !ok || rest != "apps.example.com" {
			b.Fatal("no match")
		}
		if parts := strings.Split(label, "--"); len(parts) != 5 { // "pre", "-code", "main", "dev", "alice"
			b.Fatalf("%d parts", len(parts))
		}
	}
}

// BenchmarkParsePathAppBaseline is the floor under BenchmarkParsePathApp:
// strings.Split of the same path at "/".
func BenchmarkParsePathAppBaseline(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if parts := strings.Split("/@alice/dev.main/apps/code/some/file.js", "/"); len(parts) != 7 {
			b.Fatalf("%d parts", len(parts))
		}
	}
}
