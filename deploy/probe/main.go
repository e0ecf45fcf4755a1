// Command wsedge-probe is the health check of the wsedge container image for
// runtimes without native probes (docker compose). The image is distroless,
// with no shell or curl, so the check is this small static binary:
//
//	wsedge-probe http://127.0.0.1:9002/healthz   # healthy on a 2xx answer
//	wsedge-probe grpc://127.0.0.1:9001           # healthy when grpc.health.v1 says SERVING
//
// It exits 0 when healthy, 1 when not (the reason on stderr) and 2 on bad
// usage. Kubernetes does not need it: its httpGet and grpc probes do the same.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ErrUnhealthy is wrapped by every error that means "the target answered,
// and it is not healthy" (as opposed to a usage error).
var ErrUnhealthy = errors.New("unhealthy")

// ErrUsage is wrapped by errors about the target itself.
var ErrUsage = errors.New("bad probe target")

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsedge-probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	service := fs.String("grpc-service", "", "gRPC health service name to ask about (empty: the whole server)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wsedge-probe [--timeout 3s] [--grpc-service NAME] http://HOST:PORT/PATH | grpc://HOST:PORT")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := check(ctx, fs.Arg(0), *service); err != nil {
		fmt.Fprintf(stderr, "wsedge-probe: %v\n", err)
		if errors.Is(err, ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}

// check probes one target; see the package comment for the forms.
func check(ctx context.Context, target, grpcService string) error {
	u, err := url.Parse(target)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if u.Host == "" {
		return fmt.Errorf("%w: %q has no host", ErrUsage, target)
	}
	switch u.Scheme {
	case "http", "https":
		return checkHTTP(ctx, target)
	case "grpc":
		if u.Path != "" && u.Path != "/" {
			return fmt.Errorf("%w: %q: a gRPC target has no path (use --grpc-service)", ErrUsage, target)
		}
		return checkGRPC(ctx, u.Host, grpcService)
	default:
		return fmt.Errorf("%w: %q: scheme must be http, https or grpc", ErrUsage, target)
	}
}

func checkHTTP(ctx context.Context, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnhealthy, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: GET %s: %s", ErrUnhealthy, target, resp.Status)
	}
	return nil
}

func checkGRPC(ctx context.Context, addr, service string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("%w: grpc health %s: %v", ErrUnhealthy, addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w: grpc health %s: %s", ErrUnhealthy, addr, resp.GetStatus())
	}
	return nil
}
