package primary

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

func rawServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func rawClient(t testing.TB, rawURL string, opts Options) *Client {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	opts.URL = u
	if opts.ProxyToken == "" {
		opts.ProxyToken = "aaaaaaaa-0000-4000-8000-000000000001:" + strings.Repeat("ab", 32)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// hang answers nothing until the client gives up. The body is read first:
// the server notices a client hang-up only once it has.
func hang(r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// TestHostileResponses: whatever the primary (or something in front of
// it) answers, the client returns a typed error in time, never panics,
// never buffers more than MaxBodyBytes.
func TestHostileResponses(t *testing.T) {
	const timeout = 400 * time.Millisecond
	type check func(t *testing.T, err error)
	is := func(target error) check {
		return func(t *testing.T, err error) {
			if !errors.Is(err, target) {
				t.Errorf("err = %v, want %v", err, target)
			}
		}
	}
	asError := func(status int, msgPart string) check {
		return func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != status || !strings.Contains(e.Message, msgPart) {
				t.Errorf("err = %v, want *Error %d containing %q", err, status, msgPart)
			}
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   check
	}{
		{"bad JSON on 200", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"crypto_keys": [ {"feature": `))
		}, is(ErrInvalidResponse)},
		{"wrong JSON type on 200", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"crypto_keys": "nope"}`))
		}, is(ErrInvalidResponse)},
		{"trailing garbage on 200", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"crypto_keys": []} trailing`))
		}, is(ErrInvalidResponse)},
		{"HTML login portal on 200", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(`<html><body>Sign in to Corp SSO</body></html>`))
		}, is(ErrInvalidResponse)},
		{"HTML labelled JSON on 200", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("\n  <html>oops</html>"))
		}, is(ErrInvalidResponse)},
		{"empty 200", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
		}, is(ErrInvalidResponse)},
		{"truncated body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "1000")
			_, _ = w.Write([]byte(`{"crypto_keys": [`))
		}, is(ErrUnavailable)},
		{"huge body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			chunk := []byte(strings.Repeat(" ", 64<<10))
			for i := 0; i < 1024; i++ { // 64 MiB unless the client hangs up
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, is(ErrResponseTooLarge)},
		{"huge error body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(502)
			chunk := []byte(strings.Repeat("x", 64<<10))
			for i := 0; i < 1024; i++ {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, is(ErrResponseTooLarge)},
		{"slow drip", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			for i := 0; i < 1000; i++ {
				if _, err := w.Write([]byte(" ")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}, func(t *testing.T, err error) {
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want ErrUnavailable wrapping DeadlineExceeded", err)
			}
		}},
		{"no headers at all", func(_ http.ResponseWriter, r *http.Request) {
			hang(r)
		}, is(context.DeadlineExceeded)},
		{"plain-text 502 from a load balancer", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(502)
			_, _ = w.Write([]byte("upstream connect error"))
		}, asError(502, `unexpected non-JSON response "text/plain"`)},
		{"error without content type or body", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(503)
		}, asError(503, "unexpected non-JSON response")},
		{"JSON error without message", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"error":"x"}`))
		}, asError(500, "response has no message")},
		{"broken JSON error", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"message":`))
		}, asError(500, "not valid JSON")},
		{"redirect elsewhere is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://evil.example/steal", http.StatusFound)
		}, asError(302, "unexpected non-JSON")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := rawServer(t, tt.handler)
			c := rawClient(t, srv.URL, Options{Timeout: timeout, MaxBodyBytes: 1 << 20})
			start := time.Now()
			keys, err := c.CryptoKeys(context.Background(), tokens.FeatureAppToken)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("no error; keys %v", keys)
			}
			tt.check(t, err)
			if took > timeout+time.Second {
				t.Errorf("took %v, timeout %v", took, timeout)
			}
		})
	}
}

func TestRedirectErrorNamesLocation(t *testing.T) {
	srv := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://elsewhere.example/")
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	c := rawClient(t, srv.URL, Options{})
	err := c.Deregister(context.Background(), uuid.New())
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 307 {
		t.Fatalf("err = %v", err)
	}
}

func TestIssueHostile(t *testing.T) {
	t.Run("oversize relay", func(t *testing.T) {
		srv := rawServer(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(404)
			_, _ = w.Write([]byte(strings.Repeat("<p>", 10000)))
		})
		c := rawClient(t, srv.URL, Options{MaxBodyBytes: 1000})
		res, err := c.IssueSignedAppToken(context.Background(), IssueTokenRequest{}, "")
		if !errors.Is(err, ErrResponseTooLarge) || res.Relay != nil {
			t.Errorf("res %+v, err %v", res, err)
		}
	})
	t.Run("201 with HTML", func(t *testing.T) {
		srv := rawServer(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(201)
			_, _ = w.Write([]byte("<html>"))
		})
		_, err := rawClient(t, srv.URL, Options{}).IssueSignedAppToken(context.Background(), IssueTokenRequest{}, "")
		if !errors.Is(err, ErrInvalidResponse) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		_, err = rawClient(t, "http://"+addr, Options{}).IssueSignedAppToken(context.Background(), IssueTokenRequest{}, "")
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("garbage instead of HTTP", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = bufio.NewReader(conn).ReadString('\n')
				_, _ = conn.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n\r\n"))
				_ = conn.Close()
			}
		}()
		_, err = rawClient(t, "http://"+l.Addr().String(), Options{}).IssueSignedAppToken(context.Background(), IssueTokenRequest{}, "")
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("caller context shorter than timeout", func(t *testing.T) {
		srv := rawServer(t, func(_ http.ResponseWriter, r *http.Request) { hang(r) })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := rawClient(t, srv.URL, Options{Timeout: time.Minute}).IssueSignedAppToken(ctx, IssueTokenRequest{}, "")
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Errorf("err %v after %v", err, time.Since(start))
		}
	})
}
