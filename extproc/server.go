package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/edgewire"
)

// viaUpstream is the value of edgewire.CodeDetailsAttribute on a response
// that came from the app (through the dialer). Envoy runs every local reply
// (an ext_authz denial with its login redirect and cookies, an Envoy error,
// this processor's own preflight answer) through every encoder filter, so
// the processor sees those too; only responses via upstream get the app
// policy.
const viaUpstream = "via_upstream"

// Phase labels of metrics.
const (
	phaseBeforeAuthz = "before_authz"
	phaseRequest     = "request"
	phaseResponse    = "response"
)

// ErrNoOwners is returned by New without an OwnerResolver.
var ErrNoOwners = errors.New("extproc: an owner resolver is required")

// Options configures a Processor.
type Options struct {
	// WildcardHostname is the subdomain-app pattern, e.g.
	// "*.apps.example.com"; empty means no subdomain apps (every origin is
	// refused and no preflight is answered).
	WildcardHostname string
	// Owners resolves the owner of an origin app (resolve-app-owner behind
	// the primary client's cache).
	Owners     OwnerResolver
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock of the passthru memory; nil means time.Now.
	Now func() time.Time
	// PassthruMemoryTTL and PassthruMemorySize bound how long and for how
	// many apps a passthru behaviour seen in authz metadata is remembered
	// (defaults 10 minutes, 10000 apps).
	PassthruMemoryTTL  time.Duration
	PassthruMemorySize int
	// LookupTimeout bounds one owner lookup (default 1s); keep it below
	// Envoy's ext_proc message timeout.
	LookupTimeout time.Duration
}

// Processor implements envoy.service.ext_proc.v3.ExternalProcessor.
type Processor struct {
	extprocv3.UnimplementedExternalProcessorServer
	policy  policy
	memory  *behaviorMemory
	log     *slog.Logger
	metrics *metrics
}

// New builds a Processor.
func New(opts Options) (*Processor, error) {
	if opts.Owners == nil {
		return nil, ErrNoOwners
	}
	var pattern *appurl.HostnamePattern
	if opts.WildcardHostname != "" {
		p, err := appurl.CompileHostnamePattern(opts.WildcardHostname)
		if err != nil {
			return nil, fmt.Errorf("extproc: %w", err)
		}
		pattern = p
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	ttl := opts.PassthruMemoryTTL
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	size := opts.PassthruMemorySize
	if size <= 0 {
		size = 10000
	}
	timeout := opts.LookupTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Processor{
		policy:  policy{wildcard: pattern, owners: opts.Owners, lookupTimeout: timeout},
		memory:  newBehaviorMemory(now, ttl, size),
		log:     log,
		metrics: newMetrics(opts.Registerer),
	}, nil
}

// Process serves one HTTP request's stream of messages. Envoy sends request
// headers and then response headers (either may be skipped by the route's
// processing mode); anything else is a configuration error and ends the
// stream with an error, which Envoy turns into a failed request.
func (p *Processor) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := stream.Context()
	before := false
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		before = slices.Contains(md.Get(edgewire.ExtProcPhaseKey), edgewire.ExtProcPhaseBeforeAuthz)
	}
	var ex Exchange
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp, err := p.handle(ctx, before, &ex, req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// handle answers one message.
func (p *Processor) handle(ctx context.Context, before bool, ex *Exchange, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	started := time.Now()
	ex.App = appInfo(req, ex.App)
	switch msg := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		readRequest(ex, msg.RequestHeaders.GetHeaders())
		phase := phaseRequest
		var d RequestDecision
		if before {
			phase = phaseBeforeAuthz
			d = p.policy.beforeAuthzRequest(ctx, ex, p.memory)
		} else {
			p.remember(ex)
			d = p.policy.afterAuthzRequest(ctx, ex)
		}
		p.metrics.observe(phase, d.Outcome, started)
		if d.Immediate != nil {
			return immediateResponse(d.Immediate), nil
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{},
		}}, nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		if details, ok := codeDetails(req); ok && details != viaUpstream {
			p.metrics.observe(phaseResponse, outcomeLocalReply, started)
			return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
				ResponseHeaders: &extprocv3.HeadersResponse{},
			}}, nil
		}
		readAttributes(ex, req)
		if ex.App.Known {
			p.remember(ex)
		}
		h := toHeader(msg.ResponseHeaders.GetHeaders())
		d := p.policy.response(ctx, ex, h)
		if d.CoderCookiesRemoved > 0 {
			p.metrics.cookiesRemoved.Add(float64(d.CoderCookiesRemoved))
			p.log.Warn("app tried to set a Coder cookie; removed", "count", d.CoderCookiesRemoved, "app", ex.Host)
		}
		if !ex.App.Known {
			p.metrics.missingMetadata.Inc()
		}
		p.metrics.observe(phaseResponse, d.Outcome, started)
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{Response: commonResponse(d.Mutation)},
		}}, nil
	default:
		p.metrics.observe(phaseRequest, outcomeBadMessage, started)
		return nil, status.Errorf(codes.FailedPrecondition, "extproc: unexpected message %T (only headers are processed)", msg)
	}
}

// remember notes a subdomain app's CORS behaviour for the preflight
// processor.
func (p *Processor) remember(ex *Exchange) {
	if !ex.App.Known || ex.App.AccessMethod != appurl.AccessMethodSubdomain || p.policy.wildcard == nil {
		return
	}
	if app, ok := hostApp(p.policy.wildcard, ex.Host); ok {
		p.memory.record(app, ex.App.passthru())
	}
}

// appInfo reads authz's dynamic metadata forwarded by Envoy or, on the
// fast path (no ext_authz call), the claims of the token Envoy's jwt_authn
// verified; prev is kept when a message carries neither (Envoy attaches
// metadata to every message).
func appInfo(req *extprocv3.ProcessingRequest, prev AppInfo) AppInfo {
	md := req.GetMetadataContext().GetFilterMetadata()
	s := md[edgewire.MetadataNamespace]
	if s == nil {
		return tokenInfo(md[edgewire.JWTAuthnFilter], prev)
	}
	str := func(k string) string { return s.GetFields()[k].GetStringValue() }
	access := appurl.AccessMethod(str(edgewire.MetaAccessMethod))
	if access == "" {
		return prev
	}
	a := AppInfo{Known: true, AccessMethod: access, CORSBehavior: str(edgewire.MetaCORSBehavior)}
	if a.CORSBehavior == "" {
		a.CORSBehavior = corsBehaviorSimple
	}
	if id, err := uuid.Parse(str(edgewire.MetaUserID)); err == nil {
		a.Owner = id
	}
	return a
}

// tokenInfo reads the verified token's claims (request.access_method,
// cors_behavior, user_id) from jwt_authn's metadata.
func tokenInfo(s *structpb.Struct, prev AppInfo) AppInfo {
	claims := s.GetFields()[edgewire.JWTPayloadKey].GetStructValue()
	if claims == nil {
		return prev
	}
	f := claims.GetFields()
	method := appurl.AccessMethod(f["request"].GetStructValue().GetFields()["access_method"].GetStringValue())
	if method == "" {
		return prev
	}
	owner, err := uuid.Parse(f["user_id"].GetStringValue())
	if err != nil {
		owner = uuid.Nil
	}
	return TokenAppInfo(method, f["cors_behavior"].GetStringValue(), owner)
}

// readAttributes fills the request facts Envoy sent as attributes with
// the response headers; they agree with the request headers when both came.
func readAttributes(ex *Exchange, req *extprocv3.ProcessingRequest) {
	for _, attrs := range req.GetAttributes() {
		f := attrs.GetFields()
		if v, ok := f[edgewire.HostAttribute]; ok {
			ex.Host = v.GetStringValue()
		}
		if v, ok := f[edgewire.MethodAttribute]; ok {
			ex.Method = v.GetStringValue()
		}
		if v, ok := f[edgewire.OriginAttribute]; ok {
			ex.Origin = v.GetStringValue()
		}
	}
}

// codeDetails reads Envoy's response code details from the attributes of
// a response-headers message.
func codeDetails(req *extprocv3.ProcessingRequest) (string, bool) {
	for _, attrs := range req.GetAttributes() {
		if v, ok := attrs.GetFields()[edgewire.CodeDetailsAttribute]; ok {
			return v.GetStringValue(), true
		}
	}
	return "", false
}

// readRequest copies what the policy needs from the request headers.
func readRequest(ex *Exchange, hm *corev3.HeaderMap) {
	for _, hv := range hm.GetHeaders() {
		v := headerValue(hv)
		switch strings.ToLower(hv.GetKey()) {
		case ":method":
			ex.Method = v
		case ":authority":
			ex.Host = v
		case "origin":
			ex.Origin = v
		case "access-control-request-method":
			ex.ReqMethod = v
		case "access-control-request-headers":
			if ex.ReqHeaders != "" {
				v = ex.ReqHeaders + "," + v
			}
			ex.ReqHeaders = v
		}
	}
}

// toHeader converts Envoy's header map, keeping repeated lines apart and
// in order; pseudo-headers are left out.
func toHeader(hm *corev3.HeaderMap) http.Header {
	h := make(http.Header, len(hm.GetHeaders()))
	for _, hv := range hm.GetHeaders() {
		k := hv.GetKey()
		if strings.HasPrefix(k, ":") {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		h[ck] = append(h[ck], headerValue(hv))
	}
	return h
}

// headerValue reads a header value; Envoy sends raw_value.
func headerValue(hv *corev3.HeaderValue) string {
	if rv := hv.GetRawValue(); len(rv) > 0 {
		return string(rv)
	}
	return hv.GetValue()
}

func commonResponse(m Mutation) *extprocv3.CommonResponse {
	if m.empty() {
		return nil
	}
	return &extprocv3.CommonResponse{HeaderMutation: headerMutation(m)}
}

func headerMutation(m Mutation) *extprocv3.HeaderMutation {
	hm := &extprocv3.HeaderMutation{}
	for _, k := range m.Remove {
		hm.RemoveHeaders = append(hm.RemoveHeaders, strings.ToLower(k))
	}
	for _, op := range m.Set {
		hvo := &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: strings.ToLower(op.Key), RawValue: []byte(op.Value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}
		if op.Append {
			// Envoy 1.40's ext_proc reads an append_action left at its
			// zero value (APPEND_IF_EXISTS_OR_ADD) as "unset" and falls
			// back to the deprecated append flag, whose default
			// overwrites: only the flag makes a second line (verified
			// through real Envoy in e2e).
			hvo.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			hvo.Append = wrapperspb.Bool(true) //lint:ignore SA1019 Envoy 1.40 ext_proc needs the deprecated flag to append (see above)
		}
		hm.SetHeaders = append(hm.SetHeaders, hvo)
	}
	return hm
}

// immediateResponse answers the client in place of the upstream.
func immediateResponse(im *Immediate) *extprocv3.ProcessingResponse {
	m := Mutation{}
	for k, vs := range im.Header {
		for _, v := range vs {
			m.add(k, v)
		}
	}
	// Stable order by name; lines of one header keep their order.
	slices.SortStableFunc(m.Set, func(a, b HeaderOp) int { return strings.Compare(a.Key, b.Key) })
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(im.Status)},
			Headers: headerMutation(m),
			Details: im.Details,
		},
	}}
}
