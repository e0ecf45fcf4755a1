package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestHTTP(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()

	tests := []struct {
		name   string
		status int
		path   string
		code   int
		stderr string
	}{
		{"200 is healthy", 200, "/healthz", 0, ""},
		{"204 is healthy", 204, "/healthz", 0, ""},
		{"503 is unhealthy", 503, "/healthz", 1, "503 Service Unavailable"},
		{"wrong path is unhealthy", 200, "/nope", 1, "404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status = tt.status
			var stderr bytes.Buffer
			if code := run([]string{srv.URL + tt.path}, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), tt.stderr)
			}
		})
	}
}

func TestHTTPNothingListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	err = check(context.Background(), "http://"+addr+"/healthz", "")
	if !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("err = %v, want ErrUnhealthy", err)
	}
}

func TestHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	var stderr bytes.Buffer
	if code := run([]string{"--timeout", "200ms", srv.URL}, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1 (stderr %q)", code, stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("probe took %s despite --timeout 200ms", d)
	}
}

func TestGRPC(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	target := "grpc://" + l.Addr().String()

	tests := []struct {
		name   string
		set    func()
		args   []string
		code   int
		stderr string
	}{
		{name: "serving", set: func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) }, code: 0},
		{name: "not serving", set: func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING) }, code: 1, stderr: "NOT_SERVING"},
		{name: "named service serving", set: func() {
			hs.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
		},
			args: []string{"--grpc-service", "envoy.service.auth.v3.Authorization"}, code: 0},
		{name: "unknown service", set: func() {}, args: []string{"--grpc-service", "nope"}, code: 1, stderr: "NotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.set()
			var stderr bytes.Buffer
			if code := run(append(tt.args, target), &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), tt.stderr)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"ftp://127.0.0.1:21"},
		{"127.0.0.1:9001"},
		{"grpc://127.0.0.1:9001/some/path"},
		{"--timeout", "soon", "http://127.0.0.1:1/"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
		if stderr.Len() == 0 {
			t.Errorf("%q: nothing said on stderr", args)
		}
	}
}
