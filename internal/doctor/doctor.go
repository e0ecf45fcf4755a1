// Package doctor checks a wsedge configuration against the real world
// before an operator goes live: the primary is reachable and really a
// primary, it accepts the proxy token and serves usable crypto keys, the
// access URL and wildcard hostname are valid and agree, the Envoy
// bootstrap generated from the same settings passes the installed Envoy's
// validation, and DERP (and optionally the whole edge) answers through the
// access URL. Each check yields one Result with a fix hint when it fails;
// `wsedge doctor` prints them.
package doctor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/primary"
)

// Status is the verdict of one check.
type Status int

// Verdicts, from best to worst. Skip is for checks that the configuration
// turns off; Warn for checks that could not run or found something an
// operator should look at without it stopping traffic.
const (
	Pass Status = iota
	Skip
	Warn
	Fail
)

// Symbol is how the status is printed.
func (s Status) Symbol() string {
	switch s {
	case Pass:
		return "✓"
	case Skip:
		return "-"
	case Warn:
		return "!"
	default:
		return "✗"
	}
}

func (s Status) String() string {
	switch s {
	case Pass:
		return "pass"
	case Skip:
		return "skip"
	case Warn:
		return "warn"
	default:
		return "fail"
	}
}

// Check names, in the order Run reports them.
const (
	CheckPrimary   = "primary"
	CheckToken     = "proxy token"
	CheckKeys      = "crypto keys"
	CheckAccessURL = "access URL"
	CheckWildcard  = "wildcard hostname"
	CheckEnvoy     = "envoy config"
	CheckDERP      = "derp"
	CheckEdge      = "edge"
)

// Result is the outcome of one check.
type Result struct {
	Name   string
	Status Status
	// Detail is the short result shown on the check's line.
	Detail string
	// Hint says how to fix a failure or warning; empty when passing.
	Hint string
}

// Config is what the doctor checks.
type Config struct {
	// Primary is the client built from --primary-url and --proxy-token.
	Primary *primary.Client
	// ProxyToken is the token Primary sends; optional, used only to name
	// the proxy and to explain a malformed token (it is never printed).
	ProxyToken string
	// AccessURL and WildcardHostname are the raw flag values (the doctor
	// reports their problems instead of failing to start).
	AccessURL        string
	WildcardHostname string
	// DERP says the dialer serves DERP: /derp/latency-check must answer
	// through the access URL.
	DERP bool
	// CheckEdge also GETs <access URL>/healthz through the edge.
	CheckEdge bool

	// Envoy is the edge configuration; its AccessURLHost, WildcardHostname
	// and DashboardURL are replaced by the values derived from AccessURL,
	// WildcardHostname and the primary's URL. Nil skips the Envoy check.
	Envoy *envoy.Config
	// EnvoyBinary is the Envoy to validate with; empty means
	// envoyrun.FindBinary(EnvoySearchDirs...) ($WSEDGE_ENVOY_BIN, a
	// repository's .tools/bin/envoy, envoy on $PATH). When none is found
	// the Envoy check is a warning.
	EnvoyBinary     string
	EnvoySearchDirs []string

	// HTTPClient makes the DERP and edge requests; nil means a client with
	// Timeout that does not follow redirects.
	HTTPClient *http.Client
	// Timeout bounds each network check (default 10 s).
	Timeout time.Duration
	// Now is the clock for key validity; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultTimeout bounds each network check.
const DefaultTimeout = 10 * time.Second

// Run performs every check in order and returns one Result per check.
// Checks that need the primary are skipped with a warning when it cannot
// be reached (their verdict would only repeat the first failure).
func Run(ctx context.Context, cfg Config) []Result {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout:       cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	var out []Result
	primaryOK := false
	if cfg.Primary == nil {
		out = append(out, Result{Name: CheckPrimary, Status: Fail, Detail: "no primary client configured", Hint: "set --primary-url and --proxy-token"})
	} else {
		r := checkPrimary(ctx, cfg)
		primaryOK = r.Status == Pass || r.Status == Warn
		out = append(out, r)
	}
	if primaryOK {
		tok, keys := checkTokenAndKeys(ctx, cfg)
		out = append(out, tok, keys)
	} else {
		out = append(out,
			Result{Name: CheckToken, Status: Warn, Detail: "not checked: the primary check failed", Hint: "fix the primary check first"},
			Result{Name: CheckKeys, Status: Warn, Detail: "not checked: the primary check failed", Hint: "fix the primary check first"})
	}
	access, accessRes := checkAccessURL(cfg.AccessURL)
	out = append(out, accessRes)
	out = append(out, checkWildcard(cfg.WildcardHostname, access))
	out = append(out, checkEnvoy(ctx, cfg, access))
	out = append(out, checkDERP(ctx, cfg, access))
	if cfg.CheckEdge {
		out = append(out, checkEdge(ctx, cfg, access))
	}
	return out
}

// Failed reports whether any check failed.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Print writes one line per check, the hint indented under each failure or
// warning, and a summary line.
func Print(w io.Writer, results []Result) error {
	width := 0
	for _, r := range results {
		width = max(width, len(r.Name))
	}
	var b strings.Builder
	counts := map[Status]int{}
	for _, r := range results {
		counts[r.Status]++
		fmt.Fprintf(&b, "%s %-*s  %s\n", r.Status.Symbol(), width, r.Name, r.Detail)
		if r.Hint != "" && (r.Status == Fail || r.Status == Warn) {
			fmt.Fprintf(&b, "  %*s  → %s\n", width, "", r.Hint)
		}
	}
	fmt.Fprintf(&b, "\n%d passed, %d failed, %d warnings, %d skipped\n", counts[Pass], counts[Fail], counts[Warn], counts[Skip])
	_, err := io.WriteString(w, b.String())
	return err
}
