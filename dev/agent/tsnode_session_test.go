package devagent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsedge/wsedge/tailnet/tsnode"
)

// openEcho opens a websocket-free raw HTTP/1.1 keep-alive connection to the
// demo app and returns a function doing one request on it.
func openEcho(t *testing.T, c net.Conn) func(tag string) {
	t.Helper()
	br := bufio.NewReader(c)
	return func(tag string) {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := fmt.Fprintf(c, "GET /echo?tag=%s HTTP/1.1\r\nHost: app\r\n\r\n", tag); err != nil {
			t.Fatalf("write on the existing connection (%s): %v", tag, err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read on the existing connection (%s): %v", tag, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"raw_query":"tag=`+tag+`"`) {
			t.Fatalf("request %s on the existing connection = %d %s", tag, res.StatusCode, body)
		}
	}
}

func dialCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTSNodePrimaryRestartMidSession(t *testing.T) {
	tn := newTailnet(t, tsnode.Options{DERPOnly: true})
	c, err := tn.proxy.Dial(dialCtx(t), tn.agent.ID, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	do := openEcho(t, c)
	do("before")
	sessions := tn.proxy.Client.Stats().Sessions

	tn.primary.Restart()

	// The established WireGuard session does not depend on coordination.
	do("during")
	// The proxy and the agent reconnect to the new coordinator, which
	// knows nothing: the proxy re-adds its tunnel and new dials work.
	deadline := time.Now().Add(20 * time.Second)
	for tn.proxy.Client.Stats().Sessions <= sessions || !tn.proxy.Client.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("proxy never reconnected: %+v", tn.proxy.Client.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for peers, tunnels := tn.primary.Coordinator().Stats(); peers < 2 || tunnels < 1; peers, tunnels = tn.primary.Coordinator().Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("new coordinator has %d peers, %d tunnels", peers, tunnels)
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkApps(t, tn.proxy, tn.agent.ID)
	do("after")
}

func TestTSNodeAgentRestartWithNewKeys(t *testing.T) {
	tn := newTailnet(t, tsnode.Options{DERPOnly: true})
	checkApps(t, tn.proxy, tn.agent.ID)
	oldKey := tn.agent.Node.Self().Key

	tn.agent.Stop()
	opts := tsnode.Options{DERPOnly: true, LoopbackOnly: true, ExtraRootCAs: tn.derp.Roots, Logger: nil}
	restarted := tn.primary.StartAgent(t, tn.agent.ID, opts)
	if restarted.Node.Self().Key == oldKey {
		t.Fatal("restarted agent kept its node key")
	}
	// The proxy learns the new node from coordination; dials reach the new
	// agent (waiting through the switch rather than failing).
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := tn.proxy.Dial(ctx, restarted.ID, 8080)
		cancel()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dial to the restarted agent: %v", err)
		}
	}
	checkApps(t, tn.proxy, restarted.ID)
}

func TestTSNodeManyDialsDoNotLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("1,100 dials")
	}
	tn := newTailnet(t, tsnode.Options{DERPOnly: true})
	id := tn.agent.ID
	dialOnce := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := tn.proxy.Dial(ctx, id, 8080)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		// The proxy closes first, as a reverse proxy dropping an idle
		// upstream connection does. (If the agent closed first, its
		// netstack would hold the 4-tuple in TIME-WAIT for 60 s and, being
		// a forwarder without a listening endpoint, drop a new SYN that
		// reuses it: gVisor only recycles TIME-WAIT for listeners.)
		if _, err := io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
			return err
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	for i := 0; i < 20; i++ { // warm up pools and lazily started goroutines
		if err := dialOnce(); err != nil {
			t.Fatal(err)
		}
	}
	g0, fd0 := settle(t, 0, 0)

	start := time.Now()
	for i := 0; i < 1000; i++ {
		if err := dialOnce(); err != nil {
			t.Fatalf("sequential dial %d: %v", i, err)
		}
	}
	t.Logf("1000 sequential dials+requests in %v", time.Since(start))

	start = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := dialOnce(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent dial: %v", err)
	}
	t.Logf("100 concurrent dials+requests in %v", time.Since(start))
	if s := tn.proxy.Client.Stats(); s.OpenConnections != 0 {
		t.Fatalf("tunnel references still held: %+v", s)
	}
	settle(t, g0, fd0)
}

// settle waits until goroutines and open files are back to at most g0+slack
// and fd0+slack (or, with g0 == 0, just lets things settle) and returns the
// counts.
func settle(t *testing.T, g0, fd0 int) (int, int) {
	t.Helper()
	const slack = 10
	deadline := time.Now().Add(15 * time.Second)
	for {
		runtime.GC()
		g, fd := runtime.NumGoroutine(), openFDs(t)
		if g0 == 0 {
			time.Sleep(200 * time.Millisecond)
			return runtime.NumGoroutine(), openFDs(t)
		}
		if g <= g0+slack && fd <= fd0+slack {
			return g, fd
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("leak: %d goroutines (was %d), %d fds (was %d)\n%s", g, g0, fd, fd0, buf[:n])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}
