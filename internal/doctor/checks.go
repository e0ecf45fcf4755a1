package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/envoy"
	"github.com/wsedge/wsedge/internal/envoyrun"
	"github.com/wsedge/wsedge/primary"
	"github.com/wsedge/wsedge/tokens"
)

// regenerateHint is the fix for a rejected proxy token: the Coder CLI
// command is `coder workspace-proxy regenerate-token <name|id>` (alias
// wsproxy), which invalidates the old token.
const regenerateHint = "create a new one with `coder wsproxy regenerate-token <proxy name>` and give it to wsedge as WSEDGE_PROXY_TOKEN"

// primaryURLHint is the fix when --primary-url does not lead to a primary.
const primaryURLHint = "set --primary-url to the Coder primary's dashboard URL (the one users log in at), not a workspace proxy, load balancer page or login portal"

// trimPrimary drops the "primary: " prefix of the client's errors.
func trimPrimary(err error) string {
	return strings.TrimPrefix(err.Error(), "primary: ")
}

// transportCause is the network reason of a failed request without the
// method and URL the line already shows.
func transportCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func checkPrimary(ctx context.Context, cfg Config) Result {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	u := cfg.Primary.URL().String()
	bi, err := cfg.Primary.BuildInfo(ctx)
	var pe *primary.Error
	switch {
	case err == nil && bi.WorkspaceProxy:
		return Result{Name: CheckPrimary, Status: Fail,
			Detail: fmt.Sprintf("%s is a workspace proxy, not the Coder primary", u),
			Hint:   primaryURLHint}
	case err == nil:
		v := bi.Version
		if v == "" {
			v = "unknown version"
		}
		return Result{Name: CheckPrimary, Status: Pass, Detail: fmt.Sprintf("Coder %s at %s", v, u)}
	case errors.Is(err, primary.ErrUnavailable):
		return Result{Name: CheckPrimary, Status: Fail,
			Detail: fmt.Sprintf("%s unreachable: %s", u, transportCause(err)),
			Hint:   "check --primary-url and that this host can reach it (DNS, firewall, proxy settings, TLS trust)"}
	case errors.As(err, &pe):
		what := fmt.Sprintf("answered %d", pe.StatusCode)
		if pe.InvalidBody {
			what = "answered, but not with Coder's build info"
		}
		return Result{Name: CheckPrimary, Status: Fail,
			Detail: fmt.Sprintf("%s %s: %s", u, what, pe.Message),
			Hint:   primaryURLHint}
	default:
		return Result{Name: CheckPrimary, Status: Fail, Detail: trimPrimary(err), Hint: primaryURLHint}
	}
}

// checkTokenAndKeys makes authenticated calls that change nothing on the
// primary: the crypto keys of both features (the first one doubles as the
// token check).
func checkTokenAndKeys(ctx context.Context, cfg Config) (tok, keys Result) {
	fetch := func(f tokens.Feature) ([]tokens.Key, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		return cfg.Primary.CryptoKeys(ctx, f)
	}
	appKeys, err := fetch(tokens.FeatureAppToken)
	tok = tokenResult(err)
	proxyID, wellFormed := tokenShape(cfg.ProxyToken)
	switch {
	case tok.Status == Pass && proxyID != "":
		tok.Detail += " (proxy " + proxyID + ")"
	case tok.Status == Fail && cfg.ProxyToken != "" && !wellFormed:
		tok.Detail += "; the token should look like <proxy uuid>:<64-character secret>, as `coder wsproxy create` prints it"
	}
	if tok.Status != Pass {
		return tok, Result{Name: CheckKeys, Status: Warn, Detail: "not checked: the proxy token check failed", Hint: "fix the proxy token first"}
	}
	apiKeys, err := fetch(tokens.FeatureAPIKey)
	if err != nil {
		return tok, Result{Name: CheckKeys, Status: Fail,
			Detail: fmt.Sprintf("%s: %s", tokens.FeatureAPIKey, trimPrimary(err)),
			Hint:   "the primary must serve both key features to proxies; check its logs and version"}
	}
	now := cfg.Now()
	var parts, empty []string
	for _, fk := range []struct {
		f    tokens.Feature
		keys []tokens.Key
	}{{tokens.FeatureAppToken, appKeys}, {tokens.FeatureAPIKey, apiKeys}} {
		usable := 0
		for _, k := range fk.keys {
			if k.CanVerify(now) {
				usable++
			}
		}
		parts = append(parts, fmt.Sprintf("%s: %d (%d usable)", fk.f, len(fk.keys), usable))
		if usable == 0 {
			empty = append(empty, string(fk.f))
		}
	}
	detail := strings.Join(parts, ", ")
	if len(empty) > 0 {
		return tok, Result{Name: CheckKeys, Status: Fail,
			Detail: detail + "; no usable key for " + strings.Join(empty, ", "),
			Hint:   "the primary creates and rotates these keys itself: check its logs, and that this host's clock is right (keys past deletes_at are unusable)"}
	}
	return tok, Result{Name: CheckKeys, Status: Pass, Detail: detail}
}

// tokenShape returns the proxy ID of a "<uuid>:<64-character secret>"
// token and whether the token has that shape (coderd's rule).
func tokenShape(token string) (proxyID string, ok bool) {
	id, secret, found := strings.Cut(token, ":")
	if !found {
		return "", false
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return "", false
	}
	return u.String(), len(secret) == 64 && !strings.Contains(secret, ":")
}

func tokenResult(err error) Result {
	var pe *primary.Error
	switch {
	case err == nil:
		return Result{Name: CheckToken, Status: Pass, Detail: "accepted by the primary"}
	case errors.Is(err, primary.ErrUnavailable):
		return Result{Name: CheckToken, Status: Fail, Detail: "not checked, the primary stopped answering: " + transportCause(err),
			Hint: "check the network path to the primary and run the doctor again"}
	case errors.As(err, &pe) && pe.StatusCode == http.StatusUnauthorized && !pe.InvalidBody:
		msg := pe.Message
		if pe.Detail != "" {
			msg += ": " + pe.Detail
		}
		return Result{Name: CheckToken, Status: Fail, Detail: "token rejected: " + msg, Hint: regenerateHint}
	case errors.As(err, &pe) && pe.StatusCode == http.StatusForbidden && !pe.InvalidBody:
		return Result{Name: CheckToken, Status: Fail, Detail: "refused: " + pe.Message,
			Hint: "the primary refuses the workspace proxy API: check that its license includes workspace proxies"}
	case errors.As(err, &pe) && pe.StatusCode == http.StatusNotFound && !pe.InvalidBody:
		return Result{Name: CheckToken, Status: Fail, Detail: "the primary has no workspace proxy API: " + pe.Message,
			Hint: "workspace proxies need a Coder primary with the enterprise (Premium) features enabled"}
	default:
		return Result{Name: CheckToken, Status: Fail, Detail: trimPrimary(err), Hint: primaryURLHint}
	}
}

// checkAccessURL applies the rules `wsedge authz` and `wsedge dialer`
// apply at start, and warns about plain http on a public name.
func checkAccessURL(raw string) (*url.URL, Result) {
	fail := func(detail string) (*url.URL, Result) {
		return nil, Result{Name: CheckAccessURL, Status: Fail, Detail: detail,
			Hint: "set --access-url to the proxy's public http(s) URL without a path, e.g. https://eu.coder.example.com"}
	}
	if raw == "" {
		return fail("not set")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fail(fmt.Sprintf("%q: %v", raw, err))
	case u.Scheme != "http" && u.Scheme != "https":
		return fail(fmt.Sprintf("%q: scheme must be http or https", raw))
	case u.Host == "" || u.Hostname() == "":
		return fail(fmt.Sprintf("%q: no host", raw))
	case u.User != nil:
		return fail(fmt.Sprintf("%q: must not carry user info", u.Redacted()))
	case u.Path != "" && u.Path != "/":
		return fail(fmt.Sprintf("%q: must not have a path (%s)", raw, u.Path))
	case u.RawQuery != "" || u.Fragment != "":
		return fail(fmt.Sprintf("%q: must not have a query or fragment", raw))
	}
	u.Path = ""
	if port := u.Port(); port != "" {
		if _, err := net.LookupPort("tcp", port); err != nil || port == "0" {
			return fail(fmt.Sprintf("%q: bad port %q", raw, port))
		}
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return u, Result{Name: CheckAccessURL, Status: Warn, Detail: u.String() + " (plain http)",
			Hint: "browsers will send Coder's cookies unencrypted; serve the access URL over https (--tls-cert/--tls-key on Envoy)"}
	}
	return u, Result{Name: CheckAccessURL, Status: Pass, Detail: u.String()}
}

func isLoopbackHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.IsLoopback()
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// checkWildcard compiles the pattern with coderd's rules and checks it
// against the access URL: the access host must not itself look like an
// app host, and subdomain apps are reached on the wildcard's port.
func checkWildcard(pattern string, access *url.URL) Result {
	if strings.TrimSpace(pattern) == "" {
		return Result{Name: CheckWildcard, Status: Skip, Detail: "not set: subdomain apps are disabled"}
	}
	p, err := appurl.CompileHostnamePattern(pattern)
	if err != nil {
		return Result{Name: CheckWildcard, Status: Fail, Detail: err.Error(),
			Hint: "use one '*' as the first character followed by at least two labels, e.g. *.apps.example.com or *--apps.example.com"}
	}
	if access == nil {
		return Result{Name: CheckWildcard, Status: Warn, Detail: p.String() + " (valid; not compared with the access URL, which is invalid)", Hint: "fix the access URL"}
	}
	if _, ok := p.Match(strings.ToLower(access.Host)); ok {
		return Result{Name: CheckWildcard, Status: Fail,
			Detail: fmt.Sprintf("%s matches the access URL host %s: its paths and terminals would be taken for subdomain apps", p, access.Host),
			Hint:   "choose a wildcard that does not cover the access URL host, e.g. *.apps.<access host>"}
	}
	wport := ""
	if i := strings.LastIndexByte(pattern, ':'); i >= 0 {
		wport = pattern[i+1:]
	}
	aport := access.Port()
	if aport == "" {
		aport = defaultPort(access.Scheme)
	}
	if wport == "" {
		wport = defaultPort(access.Scheme)
	}
	if wport != aport {
		return Result{Name: CheckWildcard, Status: Warn,
			Detail: fmt.Sprintf("%s: subdomain apps are reached on port %s but the access URL uses port %s", p, wport, aport),
			Hint:   fmt.Sprintf("add :%s to the wildcard hostname if the edge listens only there", aport)}
	}
	return Result{Name: CheckWildcard, Status: Pass, Detail: fmt.Sprintf("%s (apps like <app>%s)", p, p.Suffix())}
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// checkEnvoy generates the bootstrap from the same settings and has the
// installed Envoy validate it.
func checkEnvoy(ctx context.Context, cfg Config, access *url.URL) Result {
	if cfg.Envoy == nil {
		return Result{Name: CheckEnvoy, Status: Skip, Detail: "not checked"}
	}
	if access == nil {
		return Result{Name: CheckEnvoy, Status: Warn, Detail: "not checked: the access URL is invalid", Hint: "fix the access URL"}
	}
	ec := *cfg.Envoy
	ec.AccessURLHost = access.Host
	ec.WildcardHostname = cfg.WildcardHostname
	if cfg.Primary != nil {
		ec.DashboardURL = cfg.Primary.URL().String()
	}
	bootstrap, err := envoy.YAML(ec)
	if err != nil {
		hint := "fix the Envoy settings"
		var ce *envoy.ConfigError
		if errors.As(err, &ce) {
			hint = "fix --" + ce.Field
			switch ce.Field {
			case "access-url-host":
				hint = "fix --access-url"
			case "dashboard-url":
				hint = "fix --primary-url"
			}
		}
		return Result{Name: CheckEnvoy, Status: Fail, Detail: err.Error(), Hint: hint}
	}
	bin := cfg.EnvoyBinary
	if bin == "" {
		bin, err = envoyrun.FindBinary(cfg.EnvoySearchDirs...)
		if err != nil {
			return Result{Name: CheckEnvoy, Status: Warn, Detail: "generated, but not validated: no envoy binary found",
				Hint: "install the Envoy your edge runs, or point --envoy-bin (WSEDGE_ENVOY_BIN) at it"}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, max(cfg.Timeout, envoyValidateTimeout))
	defer cancel()
	version, verr := envoyrun.Version(ctx, bin)
	if verr != nil {
		return Result{Name: CheckEnvoy, Status: Fail, Detail: fmt.Sprintf("%s does not run: %v", bin, verr),
			Hint: "point --envoy-bin (WSEDGE_ENVOY_BIN) at a working Envoy"}
	}
	dir, err := os.MkdirTemp("", "wsedge-doctor-")
	if err != nil {
		return Result{Name: CheckEnvoy, Status: Warn, Detail: "not validated: " + err.Error(), Hint: "make a temporary directory writable (TMPDIR)"}
	}
	defer func() { _ = os.RemoveAll(dir) }()
	out, err := envoyrun.Validate(ctx, bin, dir, bootstrap)
	if err != nil {
		return Result{Name: CheckEnvoy, Status: Fail,
			Detail: fmt.Sprintf("envoy %s rejects the bootstrap: %s", shortVersion(version), lastLine(out, err)),
			Hint:   "compare the installed Envoy with the version wsedge targets (1.40), and check the files the flags name (--tls-cert, --tls-key); `wsedge envoy-config` prints the bootstrap"}
	}
	return Result{Name: CheckEnvoy, Status: Pass, Detail: fmt.Sprintf("valid for envoy %s (%s)", shortVersion(version), bin)}
}

// envoyValidateTimeout bounds `envoy --mode validate`, which takes a few
// seconds on a loaded machine.
const envoyValidateTimeout = 60 * time.Second

// shortVersion picks "1.40.0" out of "<sha>/1.40.0/Clean/RELEASE/BoringSSL".
func shortVersion(v string) string {
	parts := strings.Split(v, "/")
	if len(parts) >= 2 {
		return parts[1]
	}
	return v
}

// lastLine is the most telling line of Envoy's validation output: the last
// non-empty one (Envoy ends with the reason), or the error.
func lastLine(out string, err error) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			// Envoy prefixes "[time][pid][level][logger] [source:line] ".
			for strings.HasPrefix(l, "[") {
				end := strings.Index(l, "]")
				if end < 0 {
					break
				}
				l = strings.TrimSpace(l[end+1:])
			}
			const limit = 300
			if len(l) > limit {
				l = l[:limit] + "..."
			}
			return l
		}
	}
	return err.Error()
}

// checkDERP fetches <access URL>/derp/latency-check through the edge.
func checkDERP(ctx context.Context, cfg Config, access *url.URL) Result {
	if !cfg.DERP {
		return Result{Name: CheckDERP, Status: Skip, Detail: "not checked: --derp=false"}
	}
	if access == nil {
		return Result{Name: CheckDERP, Status: Warn, Detail: "not checked: the access URL is invalid", Hint: "fix the access URL"}
	}
	target := access.JoinPath("/derp/latency-check").String()
	if err := get(ctx, cfg, target); err != nil {
		return Result{Name: CheckDERP, Status: Fail, Detail: fmt.Sprintf("GET %s: %v", target, err),
			Hint: "start Envoy and the dialer (with --derp) and make the access URL's DNS and TLS lead to Envoy; Envoy routes /derp to the dialer"}
	}
	return Result{Name: CheckDERP, Status: Pass, Detail: "reachable at " + access.JoinPath("/derp").String()}
}

// checkEdge fetches <access URL>/healthz through the edge (Envoy routes it
// to the dialer).
func checkEdge(ctx context.Context, cfg Config, access *url.URL) Result {
	if access == nil {
		return Result{Name: CheckEdge, Status: Warn, Detail: "not checked: the access URL is invalid", Hint: "fix the access URL"}
	}
	target := access.JoinPath("/healthz").String()
	if err := get(ctx, cfg, target); err != nil {
		return Result{Name: CheckEdge, Status: Fail, Detail: fmt.Sprintf("GET %s: %v", target, err),
			Hint: "start Envoy and the dialer and make the access URL's DNS and TLS lead to Envoy"}
	}
	return Result{Name: CheckEdge, Status: Pass, Detail: "GET " + target + ": 200"}
}

// errStatus is a non-200 answer.
type errStatus struct {
	code int
	body string
}

func (e *errStatus) Error() string {
	if e.body == "" {
		return fmt.Sprintf("status %d", e.code)
	}
	return fmt.Sprintf("status %d: %s", e.code, e.body)
}

func get(ctx context.Context, cfg Config, target string) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "wsedge-doctor")
	res, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return errors.New(transportCause(err))
	}
	defer func() { _ = res.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 200))
	if res.StatusCode != http.StatusOK {
		return &errStatus{code: res.StatusCode, body: strings.TrimSpace(string(body))}
	}
	return nil
}
