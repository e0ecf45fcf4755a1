package primary

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// Defaults of Options.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxBodyBytes = 4 << 20
)

// Options configure a Client.
type Options struct {
	// URL is the primary's (dashboard) URL. Only scheme and host are
	// used: API paths are absolute, as in coderd's SDK.
	URL *url.URL
	// ProxyToken is "<proxy uuid>:<secret>" as `coder wsproxy create`
	// printed it; sent as Coder-External-Proxy-Token on every call.
	ProxyToken string
	// HTTPClient is used for every call with redirects disabled (a copy
	// is made); nil means an own client with transport timeouts.
	HTTPClient *http.Client
	// Timeout bounds each call, body included, unless ctx is shorter.
	Timeout time.Duration
	// MaxBodyBytes caps every response body, relayed ones included.
	MaxBodyBytes int64
	Logger       *slog.Logger
	// Registerer, if set, receives wsedge_primary_request_duration_seconds
	// (see also Collector).
	Registerer prometheus.Registerer
	// TracerProvider, if set, traces calls made within a traced request
	// and sends their trace context to the primary; nil: no tracing.
	TracerProvider trace.TracerProvider
}

// Client calls the primary's workspace-proxy API. It is safe for
// concurrent use.
type Client struct {
	base     *url.URL
	token    string
	http     *http.Client
	timeout  time.Duration
	maxBody  int64
	log      *slog.Logger
	userAgnt string

	requestDuration *prometheus.HistogramVec
}

// New checks opts and builds a Client.
func New(opts Options) (*Client, error) {
	if opts.URL == nil {
		return nil, errors.New("primary: URL is required")
	}
	if opts.URL.Scheme != "http" && opts.URL.Scheme != "https" {
		return nil, fmt.Errorf("primary: URL %q: scheme must be http or https", opts.URL.Redacted())
	}
	if opts.URL.Host == "" {
		return nil, fmt.Errorf("primary: URL %q has no host", opts.URL.Redacted())
	}
	if opts.ProxyToken == "" {
		return nil, errors.New("primary: proxy token is required")
	}
	if strings.ContainsAny(opts.ProxyToken, "\r\n\x00") {
		return nil, errors.New("primary: proxy token contains control characters")
	}
	if opts.Timeout < 0 || opts.MaxBodyBytes < 0 {
		return nil, errors.New("primary: Timeout and MaxBodyBytes must not be negative")
	}
	c := &Client{
		base:     &url.URL{Scheme: opts.URL.Scheme, Host: opts.URL.Host},
		token:    opts.ProxyToken,
		timeout:  opts.Timeout,
		maxBody:  opts.MaxBodyBytes,
		log:      opts.Logger,
		userAgnt: "wsedge-primary-client",
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxBody == 0 {
		c.maxBody = DefaultMaxBodyBytes
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var hc http.Client
	if opts.HTTPClient != nil {
		hc = *opts.HTTPClient
	} else {
		hc.Transport = defaultTransport(c.timeout)
	}
	// Never follow redirects: issue answers are relayed as they are, and
	// following a redirect would send the proxy token to another host.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.instrument(&hc, opts.Registerer)
	if opts.TracerProvider != nil {
		hc.Transport = traceTransport(hc.Transport, opts.TracerProvider)
	}
	c.http = &hc
	return c, nil
}

func defaultTransport(timeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}
}

// URL is the primary's base URL (scheme and host).
func (c *Client) URL() *url.URL { u := *c.base; return &u }

// response is a fully read answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

type call struct {
	method string
	path   string
	query  url.Values
	body   any
	header http.Header
	// auth is false for the unauthenticated build-info call.
	noAuth bool
}

// do performs one call under the per-call deadline, reading at most
// maxBody bytes of the answer.
func (c *Client) do(ctx context.Context, cl call) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.base.ResolveReference(&url.URL{Path: cl.path})
	if cl.query != nil {
		u.RawQuery = cl.query.Encode()
	}
	var body io.Reader
	if cl.body != nil {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(cl.body); err != nil {
			return response{}, fmt.Errorf("primary: %s %s: encode body: %w", cl.method, cl.path, err)
		}
		body = &buf
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u.String(), body)
	if err != nil {
		return response{}, fmt.Errorf("primary: %s %s: %w", cl.method, cl.path, err)
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range cl.header {
		req.Header[k] = v
	}
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", c.userAgnt)
	if !cl.noAuth {
		req.Header.Set(ProxyTokenHeader, c.token)
	}
	start := time.Now()
	res, err := c.http.Do(req)
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelDebug, "primary call failed",
			slog.String("method", cl.method), slog.String("path", cl.path), slog.Duration("took", time.Since(start)), slog.Any("error", err))
		return response{}, fmt.Errorf("primary: %s %s: %w: %w", cl.method, cl.path, ErrUnavailable, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, c.maxBody+1))
	if err != nil {
		return response{}, fmt.Errorf("primary: %s %s: read body (status %d): %w: %w", cl.method, cl.path, res.StatusCode, ErrUnavailable, err)
	}
	if int64(len(data)) > c.maxBody {
		return response{}, fmt.Errorf("primary: %s %s: %w: status %d, more than %d bytes", cl.method, cl.path, ErrResponseTooLarge, res.StatusCode, c.maxBody)
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "primary call",
		slog.String("method", cl.method), slog.String("path", cl.path),
		slog.String("status", statusText(res.StatusCode)), slog.Int("bytes", len(data)), slog.Duration("took", time.Since(start)))
	return response{status: res.StatusCode, header: res.Header, body: data}, nil
}

// expect performs a call, turns any status but want into an *Error and
// decodes the success body into out (when out is non-nil).
func (c *Client) expect(ctx context.Context, cl call, want int, out any) error {
	res, err := c.do(ctx, cl)
	if err != nil {
		return err
	}
	u := c.base.ResolveReference(&url.URL{Path: cl.path}).String()
	if res.status != want {
		e := decodeError(res.status, res.header.Get("Content-Type"), res.body)
		e.Method, e.URL = cl.method, u
		if res.status >= 300 && res.status < 400 {
			if loc := res.header.Get("Location"); loc != "" && e.Detail == "" {
				e.Detail = "redirect to " + loc + " (not followed)"
			}
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := decodeSuccess(res.status, res.header.Get("Content-Type"), res.body, out); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Method, e.URL = cl.method, u
		}
		return err
	}
	return nil
}

func (c *Client) invalidf(method, path string, status int, format string, args ...any) *Error {
	u := c.base.ResolveReference(&url.URL{Path: path}).String()
	return &Error{StatusCode: status, Method: method, URL: u, Message: fmt.Sprintf(format, args...), InvalidBody: true}
}

// BuildInfo fetches the primary's build info (unauthenticated pre-flight).
func (c *Client) BuildInfo(ctx context.Context) (BuildInfo, error) {
	var bi BuildInfo
	err := c.expect(ctx, call{method: http.MethodGet, path: pathBuildInfo, noAuth: true}, http.StatusOK, &bi)
	return bi, err
}

// Register registers (or re-registers) this proxy replica; 201 on
// success. The request is sent as given: the primary validates it (a nil
// replica ID is its 400 "Replica ID is invalid.").
func (c *Client) Register(ctx context.Context, req RegisterRequest) (RegisterResponse, error) {
	var res RegisterResponse
	if err := c.expect(ctx, call{method: http.MethodPost, path: pathRegister, body: req}, http.StatusCreated, &res); err != nil {
		return RegisterResponse{}, err
	}
	return res, nil
}

// Deregister marks a replica stopped; 204 on success. The replica ID can
// never register again afterwards.
func (c *Client) Deregister(ctx context.Context, replicaID uuid.UUID) error {
	return c.expect(ctx, call{method: http.MethodPost, path: pathDeregister, body: deregisterRequest{ReplicaID: replicaID}}, http.StatusNoContent, nil)
}

// CryptoKeys fetches the keys of one feature, parsed and checked (hex
// secrets of the feature's length). A key that does not parse makes the
// whole answer an ErrInvalidResponse: the cache must not half-trust it.
func (c *Client) CryptoKeys(ctx context.Context, f tokens.Feature) ([]tokens.Key, error) {
	q := url.Values{"feature": {string(f)}}
	var res cryptoKeysResponse
	if err := c.expect(ctx, call{method: http.MethodGet, path: pathCryptoKeys, query: q}, http.StatusOK, &res); err != nil {
		return nil, err
	}
	keys := make([]tokens.Key, 0, len(res.CryptoKeys))
	for i, ck := range res.CryptoKeys {
		if ck.Feature != string(f) {
			return nil, c.invalidf(http.MethodGet, pathCryptoKeys, http.StatusOK, "crypto key %d has feature %q, asked for %q", i, ck.Feature, f)
		}
		k, err := tokens.ParseKey(f, ck.Secret, ck.Sequence, ck.StartsAt, ck.DeletesAt)
		if err != nil {
			e := c.invalidf(http.MethodGet, pathCryptoKeys, http.StatusOK, "crypto key %d (sequence %d): %v", i, ck.Sequence, err)
			e.cause = err
			return nil, e
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// IssueSignedAppToken asks the primary to authenticate the browser's user
// and authorise one app session. On 201 the result carries the signed
// token (not yet verified: the caller verifies and matches it); on any
// other status it carries the primary's complete answer for verbatim
// relay (redirects are not followed). The error is only for calls that
// got no usable answer: transport failure, timeout, oversize body, or a
// 201 without a token.
func (c *Client) IssueSignedAppToken(ctx context.Context, req IssueTokenRequest, clientIP string) (IssueResult, error) {
	h := http.Header{}
	// The HTML variant: error pages come back as the browser should see
	// them.
	h.Set("Accept", "text/html")
	if clientIP != "" {
		h.Set(RealIPHeader, clientIP)
	}
	res, err := c.do(ctx, call{method: http.MethodPost, path: pathIssueToken, body: req, header: h})
	if err != nil {
		return IssueResult{}, err
	}
	if res.status != http.StatusCreated {
		return IssueResult{Relay: &RelayedResponse{Status: res.status, Header: res.header.Clone(), Body: res.body}}, nil
	}
	var out issueTokenResponse
	if err := decodeSuccess(res.status, res.header.Get("Content-Type"), res.body, &out); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Method, e.URL = http.MethodPost, c.base.ResolveReference(&url.URL{Path: pathIssueToken}).String()
		}
		return IssueResult{}, err
	}
	if out.SignedTokenStr == "" {
		return IssueResult{}, c.invalidf(http.MethodPost, pathIssueToken, res.status, "201 without signed_token_str")
	}
	return IssueResult{Token: out.SignedTokenStr}, nil
}

// ResolveAppOwner asks who owns the workspace of a subdomain app (for the
// "simple" CORS check). coderd accepts only subdomain requests with base
// path "/": an empty access method or base path is filled in that way,
// anything else is sent as given (and refused by the primary with 400).
func (c *Client) ResolveAppOwner(ctx context.Context, req appurl.Request) (uuid.UUID, error) {
	if req.AccessMethod == "" {
		req.AccessMethod = appurl.AccessMethodSubdomain
	}
	if req.BasePath == "" {
		req.BasePath = "/"
	}
	req = req.Normalize()
	var res resolveAppOwnerResponse
	if err := c.expect(ctx, call{method: http.MethodPost, path: pathResolveAppOwner, body: resolveAppOwnerRequest{AppRequest: req}}, http.StatusOK, &res); err != nil {
		return uuid.Nil, err
	}
	if res.OwnerID == uuid.Nil {
		return uuid.Nil, c.invalidf(http.MethodPost, pathResolveAppOwner, http.StatusOK, "owner_id missing or nil")
	}
	return res.OwnerID, nil
}

// ReportAppStats uploads app usage sessions; 204 on success. An empty
// batch makes no call.
func (c *Client) ReportAppStats(ctx context.Context, stats []StatsReport) error {
	if len(stats) == 0 {
		return nil
	}
	return c.expect(ctx, call{method: http.MethodPost, path: pathAppStats, body: reportAppStatsRequest{Stats: stats}}, http.StatusNoContent, nil)
}
