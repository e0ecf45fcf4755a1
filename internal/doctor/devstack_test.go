package doctor_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/devstack"
	"github.com/wsedge/wsedge/internal/doctor"
	"github.com/wsedge/wsedge/internal/testutil"
	"github.com/wsedge/wsedge/primary"
)

// TestDoctorThroughTheDevStack runs the doctor against `wsedge dev`'s whole
// deployment: the dev primary, and the access URL through real Envoy to
// the dialer (/healthz). Names resolve to the loopback listeners without
// DNS. wsedge dev itself uses *.localhost names, which the doctor treats
// as local; these test names are not, so plain http is a warning.
func TestDoctorThroughTheDevStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole dev stack")
	}
	dashboard := &url.URL{Scheme: "http", Host: "dashboard.doctor.test"}
	access := &url.URL{Scheme: "http", Host: "proxy.doctor.test"}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dev, err := devstack.StartDev(ctx, devstack.DevConfig{
		DashboardURL: dashboard, AccessURL: access, WildcardHostname: "*.apps.doctor.test",
		PrimaryListen: netip.MustParseAddrPort("127.0.0.1:0"), EdgeListen: netip.MustParseAddrPort("127.0.0.1:0"),
		EnvoyBinary: testutil.EnvoyBinary(t), Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("StartDev: %v", err)
	}
	t.Cleanup(func() { _ = dev.Close() })

	to := func(addr netip.AddrPort) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr.String())
		}}}
	}
	pc, err := primary.New(primary.Options{URL: dashboard, ProxyToken: dev.Primary.ProxyToken(), HTTPClient: to(dev.PrimaryAddr)})
	if err != nil {
		t.Fatal(err)
	}
	ec := envoy.DefaultConfig()
	rs := doctor.Run(ctx, doctor.Config{
		Primary: pc, ProxyToken: dev.Primary.ProxyToken(),
		AccessURL: access.String(), WildcardHostname: "*.apps.doctor.test",
		CheckEdge:   true, // the dev dialer serves no DERP
		Envoy:       &ec,
		EnvoyBinary: testutil.EnvoyBinary(t),
		HTTPClient:  to(dev.EdgeAddr),
	})
	var out bytes.Buffer
	_ = doctor.Print(&out, rs)
	t.Logf("doctor:\n%s", out.String())
	for _, r := range rs {
		want := doctor.Pass
		switch r.Name {
		case doctor.CheckDERP:
			want = doctor.Skip
		case doctor.CheckAccessURL:
			want = doctor.Warn // plain http on a name that is not loopback
		}
		if r.Status != want {
			t.Errorf("%s: %s %q (hint %q), want %s", r.Name, r.Status, r.Detail, r.Hint, want)
		}
	}
	if !strings.Contains(out.String(), "✓ edge ") {
		t.Errorf("no edge check in:\n%s", out.String())
	}
}
