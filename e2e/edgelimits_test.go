package e2e

import (
	"context"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestHTTP2ClientLimits: an HTTP/2 client is told the edge's limits in
// Envoy's first SETTINGS and connection WINDOW_UPDATE: at most 100 streams
// at once, 64 KiB in flight per stream and 1 MiB per connection (Envoy
// 1.40's own defaults: 1,024 streams, 16 MiB per stream, 24 MiB per
// connection, which one client may make Envoy hold).
func TestHTTP2ClientLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, conn := dialEdgeHTTP2(ctx, t)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	settings := map[http2.SettingID]uint32{}
	var connWindow uint32
	for gotSettings := false; !gotSettings || connWindow == 0; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading Envoy's first frames: %v (settings %v, connection window update %d)", err, settings, connWindow)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			gotSettings = true
			_ = f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
			if err := fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				connWindow = f.Increment
			}
		}
	}
	if got := settings[http2.SettingMaxConcurrentStreams]; got != 100 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want 100", got)
	}
	if got := settings[http2.SettingInitialWindowSize]; got != 64<<10 {
		t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE = %d, want %d", got, 64<<10)
	}
	// The connection window starts at 65,535 (RFC 9113); Envoy raises it
	// at once to its configured size.
	if want := uint32(1<<20 - 65535); connWindow != want {
		t.Errorf("connection WINDOW_UPDATE %d, want %d (a 1 MiB window)", connWindow, want)
	}
}
