package e2e

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

// browserTerminal is TestBrowser's terminal step: the dashboard's terminal
// page (already signed in) connects to a shell on the demo agent through
// the edge at accessHost; a command typed into xterm.js prints its output
// on the page; a reload keeps the reconnect id, shows the earlier output
// again (the agent's replay: the reloaded page has no state of its own)
// and still runs commands; the page without a reconnect id starts a
// different shell, whose screen lacks the earlier output.
func browserTerminal(t *testing.T, ctx context.Context, termURL, accessHost string, shot func(string)) {
	t.Helper()
	sockets := &eventLog{}
	recordEvents(t, ctx, sockets, network.WebSocketCreated, func(ev *network.EventWebSocketCreated) (string, bool) {
		return ev.URL, true
	})
	recordEvents(t, ctx, sockets, network.WebSocketHandshakeResponseReceived, func(ev *network.EventWebSocketHandshakeResponseReceived) (string, bool) {
		if ev.Response == nil {
			return "", false
		}
		return fmt.Sprintf("handshake %d", ev.Response.Status), true
	})

	// 4a. The page connects and puts a fresh reconnect id into its URL.
	first := openTerminal(t, ctx, termURL, uuid.Nil, shot, "04-terminal")
	checkTerminalSocket(t, sockets.waitFor(2), accessHost, first)

	typeInTerminal(t, ctx, "echo wsedge-$((6*7))\r")
	// The typed line holds "$((6*7))"; only the shell's answer is "42".
	screen := waitTerminalText(t, ctx, "wsedge-42", shot, "04-terminal")
	t.Logf("terminal %s: typed echo wsedge-$((6*7)), the page shows %q", first, lastLines(screen, 3))
	shot("04-terminal.png")

	// 4b. Reload: the same reconnect id, the earlier output replayed by the
	// agent, and the shell still answers.
	if _, err := runIn(ctx, 30*time.Second, chromedp.Reload()); err != nil {
		t.Fatalf("reload the terminal page: %v", err)
	}
	again := openTerminal(t, ctx, "", first, shot, "05-terminal-reload")
	checkTerminalSocket(t, sockets.waitFor(2), accessHost, again)
	screen = waitTerminalText(t, ctx, "wsedge-42", shot, "05-terminal-reload")
	t.Logf("after reload, reconnect %s: the page shows the earlier output again: %q", again, lastLines(screen, 3))
	typeInTerminal(t, ctx, "echo again-$((7*8))\r")
	screen = waitTerminalText(t, ctx, "again-56", shot, "05-terminal-reload")
	t.Logf("after reload: typed echo again-$((7*8)), the page shows %q", lastLines(screen, 3))
	shot("05-terminal-reload.png")

	// 4c. The page without a reconnect id: a new id, a new shell.
	third := openTerminal(t, ctx, termURL, uuid.Nil, shot, "06-terminal-new")
	if third == first {
		t.Errorf("a fresh terminal page reused reconnect id %s", first)
	}
	checkTerminalSocket(t, sockets.waitFor(2), accessHost, third)
	typeInTerminal(t, ctx, "echo fresh-$((2+3))\r")
	screen = waitTerminalText(t, ctx, "fresh-5", shot, "06-terminal-new")
	if strings.Contains(screen, "wsedge-42") || strings.Contains(screen, "again-56") {
		t.Errorf("a new reconnect id shows the other session's output:\n%s", screen)
	}
	shot("06-terminal-new.png")
}

// openTerminal opens termURL (or, when empty, waits on the page already
// loading), waits until the page says it is connected, and returns the
// reconnect id in the page's URL; want, when set, is the id it must be.
func openTerminal(t *testing.T, ctx context.Context, termURL string, want uuid.UUID, shot func(string), step string) uuid.UUID {
	t.Helper()
	var actions []chromedp.Action[chromedp.Void]
	if termURL != "" {
		actions = append(actions, chromedp.Navigate(termURL))
	}
	actions = append(actions, chromedp.WaitVisible(chromedp.CSS(`#status[data-state="connected"]`)))
	if _, err := runIn(ctx, 30*time.Second, chromedp.Steps(actions...)); err != nil {
		shot(step + "-failed.png")
		status, _ := runIn(ctx, 2*time.Second, chromedp.TextContent(chromedp.CSS("#status")))
		t.Fatalf("terminal page %s never connected: %v (status line %q, now at %s)", termURL, err, status, location(t, ctx))
	}
	loc := location(t, ctx)
	if !strings.HasSuffix(loc.Path, "/terminal") {
		t.Fatalf("terminal page ended at %s", loc)
	}
	id, err := uuid.Parse(loc.Query().Get("reconnect"))
	if err != nil {
		t.Fatalf("terminal page URL %s has no reconnect id: %v", loc, err)
	}
	if want != uuid.Nil && id != want {
		t.Fatalf("after the reload the reconnect id is %s, want %s", id, want)
	}
	return id
}

// checkTerminalSocket checks the page's websocket: on the access host, the
// agent's pty path, the page's reconnect id, a signed token, and a 101.
func checkTerminalSocket(t *testing.T, events []string, accessHost string, reconnect uuid.UUID) {
	t.Helper()
	if len(events) != 2 || events[1] != "handshake 101" {
		t.Errorf("terminal websocket events %q, want its URL then handshake 101", events)
		return
	}
	u, err := url.Parse(events[0])
	if err != nil {
		t.Errorf("terminal websocket URL %q: %v", events[0], err)
		return
	}
	q := u.Query()
	if u.Scheme != "ws" || u.Host != accessHost || !strings.HasPrefix(u.Path, "/api/v2/workspaceagents/") || !strings.HasSuffix(u.Path, "/pty") ||
		q.Get("reconnect") != reconnect.String() || q.Get(tokens.SignedAppTokenQueryParam) == "" || q.Get("width") == "" || q.Get("height") == "" {
		u.RawQuery = strings.ReplaceAll(u.RawQuery, q.Get(tokens.SignedAppTokenQueryParam), "<token>")
		t.Errorf("terminal websocket %s, want ws://%s/api/v2/workspaceagents/<agent>/pty with reconnect=%s, width, height and the token", u, accessHost, reconnect)
	}
}

// typeInTerminal types keys into xterm.js's hidden textarea as a keyboard
// does: per key a keyDown carrying the key's text, then a keyUp. (chromedp's
// SendKeys adds a separate "char" event, which xterm.js, having handled
// the keydown already, receives as a second keystroke.)
func typeInTerminal(t *testing.T, ctx context.Context, keys string) {
	t.Helper()
	if _, err := runIn(ctx, 5*time.Second, chromedp.Focus(chromedp.CSS(".xterm-helper-textarea"))); err != nil {
		t.Fatalf("focus the terminal: %v", err)
	}
	for _, r := range keys {
		var down, up *input.DispatchKeyEventParams
		text := ""
		for _, ev := range kb.Encode(r) {
			switch ev.Type {
			case kb.KeyDown:
				down = ev
			case kb.KeyUp:
				up = ev
			case kb.KeyChar:
				text = ev.Text
			}
		}
		if down == nil || up == nil {
			t.Fatalf("no key for %q", r)
		}
		down.Text, down.UnmodifiedText = text, text
		if r == '\r' {
			down.Text, down.UnmodifiedText = "\r", "\r"
		}
		for _, ev := range []*input.DispatchKeyEventParams{down, up} {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := chromedp.Call(cctx, input.DispatchKeyEvent, *ev)
			cancel()
			if err != nil {
				t.Fatalf("type %q into the terminal: %v", keys, err)
			}
		}
	}
}

// waitTerminalText waits until xterm.js's rendered rows contain want and
// returns the screen's text, one line per row.
func waitTerminalText(t *testing.T, ctx context.Context, want string, shot func(string), step string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var screen string
	for {
		// Each row is a div; xterm.js renders spaces as no-break spaces.
		text, err := runIn(ctx, 5*time.Second, chromedp.Evaluate[string](
			`Array.from(document.querySelectorAll(".xterm-rows > div"), (r) => r.textContent.replace(/\u00a0/g, " ").trimEnd()).join("\n")`))
		if err == nil {
			screen = text
			if strings.Contains(screen, want) {
				return screen
			}
		}
		if time.Now().After(deadline) {
			shot(step + "-failed.png")
			t.Fatalf("the terminal never showed %q (last error %v); the page shows:\n%s", want, err, strings.TrimRight(screen, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lastLines is the last n non-empty lines of a screen.
func lastLines(screen string, n int) string {
	var lines []string
	for _, l := range strings.Split(screen, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " ⏎ ")
}

// eventLog collects lines describing the tab's events.
type eventLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *eventLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

// take returns and forgets the lines so far.
func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// waitFor waits up to 5 s for n lines, then takes what there is.
func (l *eventLog) waitFor(n int) []string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		k := len(l.lines)
		l.mu.Unlock()
		if k >= n || time.Now().After(deadline) {
			return l.take()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recordEvents adds the tab's events of one kind to l, as f describes them
// (false: skip), until the test ends.
func recordEvents[E any](t *testing.T, ctx context.Context, l *eventLog, ev cdp.Event[E], f func(*E) (string, bool)) {
	t.Helper()
	lctx, cancel := context.WithCancel(ctx)
	events := chromedp.Events(lctx, ev)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e, err := range events {
			if err != nil {
				return
			}
			if s, ok := f(&e); ok {
				l.add(s)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// recordPageErrors collects what the pages log as errors, apart from
// failed network requests (a missing favicon): script exceptions and
// security messages such as Content-Security-Policy violations.
func recordPageErrors(t *testing.T, ctx context.Context) *eventLog {
	t.Helper()
	l := &eventLog{}
	recordEvents(t, ctx, l, cdplog.EntryAdded, func(ev *cdplog.EventEntryAdded) (string, bool) {
		e := ev.Entry
		if e == nil || e.Level != cdplog.EntryLevelError || e.Source == cdplog.EntrySourceNetwork {
			return "", false
		}
		return fmt.Sprintf("%s: %s (%s)", e.Source, e.Text, e.URL), true
	})
	recordEvents(t, ctx, l, runtime.ExceptionThrown, func(ev *runtime.EventExceptionThrown) (string, bool) {
		d := ev.ExceptionDetails
		if d == nil {
			return "", false
		}
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		return fmt.Sprintf("exception: %s (%s:%d)", msg, d.URL, d.LineNumber), true
	})
	return l
}
