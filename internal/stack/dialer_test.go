package stack_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	devprimary "github.com/wsedge/wsedge/dev/primary"
	"github.com/wsedge/wsedge/internal/stack"
	"github.com/wsedge/wsedge/primary"
)

// eventLog records what happened, in order, across goroutines.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(e string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

// closeRecordingListener logs its first Close: the moment the dialer
// stops accepting connections.
type closeRecordingListener struct {
	net.Listener
	log  *eventLog
	once sync.Once
}

func (l *closeRecordingListener) Close() error {
	l.once.Do(func() { l.log.add("listener closed") })
	return l.Listener.Close()
}

// TestDialerDeregistersBeforeClosingItsListener: a stopping dialer tells
// the primary first (so siblings and the primary stop offering it), and
// only then closes its listener and drains, as Coder's proxy does.
func TestDialerDeregistersBeforeClosingItsListener(t *testing.T) {
	events := &eventLog{}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	primaryURL := &url.URL{Scheme: "http", Host: pl.Addr().String()}
	dev, err := devprimary.New(devprimary.Options{AccessURL: primaryURL, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	ps := &httptest.Server{Listener: pl, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev.Handler().ServeHTTP(w, r)
		if strings.HasSuffix(r.URL.Path, "/workspaceproxies/me/deregister") {
			events.add("deregistered")
		}
	})}}
	ps.Start()
	t.Cleanup(ps.Close)

	client, err := primary.New(primary.Options{URL: primaryURL, ProxyToken: dev.ProxyToken()})
	if err != nil {
		t.Fatal(err)
	}
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- stack.ServeDialer(ctx, stack.DialerConfig{
			Primary:          client,
			ProxyToken:       dev.ProxyToken(),
			AccessURL:        &url.URL{Scheme: "http", Host: "proxy.order.test"},
			WildcardHostname: "*.apps.order.test",
			Listener:         &closeRecordingListener{Listener: dl, log: events},
			Grace:            time.Second,
			Logger:           slog.New(slog.DiscardHandler),
			Tailnet:          stack.TailnetConfig{LoopbackOnly: true},
		})
	}()

	// Serving: the dialer answers its health endpoint.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + dl.Addr().String() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dialer not serving: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	reps := dev.Replicas()
	if len(reps) != 1 || !reps[0].StoppedAt.IsZero() {
		t.Fatalf("replicas before shutdown: %+v", reps)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeDialer: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeDialer did not return")
	}
	if got := strings.Join(events.list(), ", "); got != "deregistered, listener closed" {
		t.Errorf("shutdown order: %s; want deregistered, listener closed", got)
	}
	if reps := dev.Replicas(); len(reps) != 1 || reps[0].StoppedAt.IsZero() {
		t.Errorf("replica not stopped on the primary: %+v", reps)
	}
}
