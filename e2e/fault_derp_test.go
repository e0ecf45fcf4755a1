package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	tsderp "tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"

	"github.com/wsedge/wsedge/derp"
	devprimary "github.com/wsedge/wsedge/dev/primary"
	wsstack "github.com/wsedge/wsedge/internal/stack"
	"github.com/wsedge/wsedge/primary"
)

// derpReplica is a derp.Server behind its own TLS listener, as a sibling
// proxy replica serves it.
type derpReplica struct {
	srv *httptest.Server
	// cur is the DERP server; set once the mesh key and TLS roots are
	// known (they need the listener first).
	cur atomic.Pointer[derp.Server]
}

func (r *derpReplica) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if s := r.cur.Load(); s != nil {
		s.ServeHTTP(w, req)
		return
	}
	http.Error(w, "not ready", http.StatusServiceUnavailable)
}

func (r *derpReplica) s() *derp.Server { return r.cur.Load() }

// startDERPReplica listens; serve starts the DERP server on it.
func startDERPReplica(t *testing.T) *derpReplica {
	t.Helper()
	r := &derpReplica{}
	r.srv = httptest.NewUnstartedServer(r)
	r.srv.EnableHTTP2 = false
	r.srv.StartTLS()
	t.Cleanup(r.stop)
	return r
}

func (r *derpReplica) serve(t *testing.T, opts derp.Options) *derp.Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := derp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.cur.Store(s)
	return s
}

// stop takes the replica away as a crashed process would: its clients and
// mesh links are cut and its port refuses connections.
func (r *derpReplica) stop() {
	r.srv.CloseClientConnections()
	r.srv.Close()
	if s := r.cur.Load(); s != nil {
		_ = s.Close()
	}
}

func derpRoots(rs ...*derpReplica) *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range rs {
		p.AddCert(r.srv.Certificate())
	}
	return p
}

// derpClient is a tailscale DERP client homed on r, with its received
// packets on a channel.
func derpClient(t *testing.T, r *derpReplica, roots *x509.CertPool) (*derphttp.Client, key.NodePublic, <-chan tsderp.ReceivedPacket) {
	t.Helper()
	k := key.NewNode()
	c, err := derphttp.NewClient(k, r.srv.URL+"/derp", func(string, ...any) {}, netmon.NewStatic())
	if err != nil {
		t.Fatal(err)
	}
	c.TLSConfig = &tls.Config{RootCAs: roots}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("DERP connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ch := make(chan tsderp.ReceivedPacket, 16)
	go func() {
		defer close(ch)
		for {
			m, err := c.Recv()
			if err != nil {
				return
			}
			if p, ok := m.(tsderp.ReceivedPacket); ok {
				p.Data = append([]byte(nil), p.Data...)
				ch <- p
			}
		}
	}()
	return c, k.Public(), ch
}

// relays reports whether a packet from c reaches dst (seen on got) within
// the bound, resending while a mesh learns about remote clients.
func relays(c *derphttp.Client, from, dst key.NodePublic, got <-chan tsderp.ReceivedPacket, data string, within time.Duration) bool {
	deadline := time.After(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := c.Send(dst, []byte(data)); err != nil {
			return false
		}
		select {
		case p, ok := <-got:
			if !ok {
				return false
			}
			if p.Source == from && string(p.Data) == data {
				return true
			}
		case <-tick.C:
		case <-deadline:
			return false
		}
	}
}

// TestFaultDERPMeshPeerDown: of two meshed DERP replicas one dies. The
// survivor's peer check reports Coder's "Failed to dial peers: …" within
// its bound (2 attempts of at most 3 s, 1 s apart) and it keeps relaying
// between its own clients.
func TestFaultDERPMeshPeerDown(t *testing.T) {
	const meshKey = "fault-suite-mesh-key-0123456789ab"
	a, b := startDERPReplica(t), startDERPReplica(t)
	roots := derpRoots(a, b)
	a.serve(t, derp.Options{MeshKey: meshKey, MeshTLSConfig: &tls.Config{RootCAs: roots}})
	b.serve(t, derp.Options{MeshKey: meshKey, MeshTLSConfig: &tls.Config{RootCAs: roots}})
	if err := a.s().SetSiblings([]derp.Sibling{{Hostname: "replica-b", RelayAddress: b.srv.URL}}); err != nil {
		t.Fatal(err)
	}
	if err := b.s().SetSiblings([]derp.Sibling{{Hostname: "replica-a", RelayAddress: a.srv.URL}}); err != nil {
		t.Fatal(err)
	}
	ca, ka, gotA := derpClient(t, a, roots)
	ca2, ka2, gotA2 := derpClient(t, a, roots)
	cb, kb, gotB := derpClient(t, b, roots)
	if !relays(ca, ka, kb, gotB, "A to B over the mesh", 10*time.Second) || !relays(cb, kb, ka, gotA, "B to A over the mesh", 10*time.Second) {
		t.Fatal("the mesh does not relay while both replicas are up")
	}
	ctx := context.Background()
	if got := a.s().CheckPeers(ctx); got != "" {
		t.Fatalf("CheckPeers with the peer up = %q", got)
	}

	b.stop()
	start := time.Now()
	got := a.s().CheckPeers(ctx)
	took := time.Since(start)
	want := "Failed to dial peers: relay replica-b (" + b.srv.URL + "): "
	if !strings.HasPrefix(got, want) || took > 8*time.Second {
		t.Errorf("CheckPeers with the peer down = %q after %v; want %q… within 8 s", got, took, want)
	}
	t.Logf("CheckPeers reported the dead peer after %v: %s", took.Round(time.Millisecond), got)
	// The survivor relays for its own clients, both ways.
	if !relays(ca, ka, ka2, gotA2, "A to A", 5*time.Second) || !relays(ca2, ka2, ka, gotA, "A back to A", 5*time.Second) {
		t.Error("the surviving replica stopped relaying between its own clients")
	}
}

// TestFaultDERPMeshSiblingDownInHealthReport: a DERP-enabled dialer
// meshes with the sibling replica the primary lists; when the sibling
// dies, the dialer's /healthz-report carries the warning and the primary
// receives it as replica_error on the next registration.
func TestFaultDERPMeshSiblingDownInHealthReport(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("E2E_LOG") == "debug" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	p := startPrimary(t, devprimary.Options{HealthInterval: time.Hour, Logger: log})
	client, toPrimary := p.client, p.http
	accessURL := &url.URL{Scheme: "http", Host: accessHost}

	// The sibling replica registers first; its DERP uses the mesh key the
	// primary hands out.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	siblingID := uuid.New()
	sib := startDERPReplica(t)
	reg, err := client.Register(ctx, primary.RegisterRequest{
		AccessURL: accessURL.String(), WildcardHostname: wildcardHost, DerpEnabled: true, ReplicaID: siblingID,
		ReplicaRelayAddress: sib.srv.URL, Hostname: "sibling", Version: "v0.0.0-e2e",
	})
	if err != nil {
		t.Fatalf("sibling register: %v", err)
	}
	sib.serve(t, derp.Options{MeshKey: reg.DERPMeshKey, Logger: log})

	dl := loopback(t)
	dialerURL := "http://" + dl.Addr().String()
	serveUntilEnd(t, "ServeDialer", 15*time.Second, func(ctx context.Context) error {
		return wsstack.ServeDialer(ctx, wsstack.DialerConfig{
			Primary: client, ProxyToken: p.ProxyToken(),
			AccessURL: accessURL, WildcardHostname: wildcardHost,
			DERPEnabled: true, RelayAddress: dialerURL,
			Hostname: "e2e", Version: "v0.0.0-e2e",
			Listener: dl, Grace: time.Second, Logger: log,
			Tailnet:              wsstack.TailnetConfig{LoopbackOnly: true},
			MeshTLSConfig:        &tls.Config{RootCAs: derpRoots(sib)},
			CoordinateHTTPClient: toPrimary,
			RegisterInterval:     300 * time.Millisecond,
		})
	})
	report := func() []string {
		req, _ := http.NewRequest(http.MethodGet, dialerURL+"/healthz-report", nil)
		req.Host = accessHost
		res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return []string{err.Error()}
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return []string{string(b)}
	}
	keepSibling := func() { // the sibling stays registered while it lives
		_, _ = client.Register(ctx, primary.RegisterRequest{
			AccessURL: accessURL.String(), WildcardHostname: wildcardHost, DerpEnabled: true, ReplicaID: siblingID,
			ReplicaRelayAddress: sib.srv.URL, Hostname: "sibling", Version: "v0.0.0-e2e",
		})
	}

	// Up: the dialer (listed the sibling on its first registration)
	// re-registers with an empty replica_error and reports nothing.
	waitFor(t, 20*time.Second, "the dialer registers a few times with its sibling up", func() (bool, string) {
		keepSibling()
		r := report()[0]
		for _, rep := range p.Replicas() {
			if rep.ID != siblingID && rep.UpdatedAt.Sub(rep.CreatedAt) > time.Second {
				return rep.Error == "" && strings.Contains(r, `"errors":null`) && !strings.Contains(r, "Failed to dial peers"), r
			}
		}
		return false, r
	})
	sib.stop()
	want := "Failed to dial peers: relay sibling (" + sib.srv.URL + "): "
	took := waitFor(t, 15*time.Second, "the health report warns about the dead sibling", func() (bool, string) {
		r := report()[0]
		return strings.Contains(r, want), r
	})
	t.Logf("/healthz-report warned %v after the sibling died", took.Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the primary receives replica_error", func() (bool, string) {
		for _, r := range p.Replicas() {
			if r.ID != siblingID && strings.HasPrefix(r.Error, want) {
				return true, r.Error
			}
		}
		return false, "no replica reports the dead sibling"
	})
}
