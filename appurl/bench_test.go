package appurl

import "testing"

func BenchmarkSubdomainHostname(b *testing.B) {
	p, err := CompileHostnamePattern("*.apps.example.com")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		sub, ok := p.Match("pre---code--main--dev--alice.apps.example.com")
		if !ok {
			b.Fatal("no match")
		}
		if _, err := ParseSubdomainAppURL(sub); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePathApp(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok, err := ParsePathApp("/@alice/dev.main/apps/code/some/file.js"); !ok || err != nil {
			b.Fatal(err)
		}
	}
}
