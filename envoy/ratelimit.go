package envoy

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wsedge/wsedge/coderhttp"
	"github.com/wsedge/wsedge/edgewire"
)

// Per-user rate limiting (issue 5).
//
// Envoy's local_ratelimit filter keeps one token bucket per descriptor, and
// a configured descriptor entry without a value is a wildcard: Envoy
// creates a bucket for every value it meets (max_dynamic_descriptors of
// them, least recently used evicted). The filter's own rate_limits build the
// request's descriptors:
//
//   - (user=<rate_limit_key>) when authz's allow carried the metadata
//     rate_limit_key (the user ID; authz also emits it as user_id);
//   - (user=anonymous, masked_remote_address=<client>/<mask>) always; it
//     only matches a configured descriptor when the metadata is absent,
//     because a user's descriptor carries the user ID where "anonymous"
//     is expected.
//
// So a user's requests draw from the user's bucket wherever they come from,
// and requests without a user (ones authz allows untouched, such as the
// catch-all's) from their client's bucket. The client is Envoy's remote
// address after X-Forwarded-For handling (xff_num_trusted_hops), IPv6
// grouped by /64 as Coder's own rate limiter (go-chi/httprate) groups it.
// No default bucket is configured, so nothing is shared between keys.
//
// Requests ext_authz denies (the login hand-off's redirects, error pages)
// are answered before this filter runs and are not counted by it. With
// RateLimit.BeforeAuthz a limiter in front of ext_authz, keyed by client
// only (ClientRateLimitFilter), counts every checked request, denied ones
// included, as Coder's own proxy does. The one route that calls authz's
// owner lookup before ext_authz, the subdomain CORS preflight, has its own
// limiter in front of the preflight ext_proc, keyed by client only
// (PreflightRateLimitFilter): the preflights that ext_proc answers never
// reach the client limiter; the ones it lets through are checked requests
// and count there too.

// Rate limit filter names and descriptor keys.
const (
	// LocalRateLimitFilter runs after ext_authz, keyed by user.
	LocalRateLimitFilter = "envoy.filters.http.local_ratelimit"
	// PreflightRateLimitFilter runs before the preflight ext_proc on the
	// subdomain preflight route only, keyed by client address.
	PreflightRateLimitFilter = "wsedge.local_ratelimit.preflight"
	// ClientRateLimitFilter runs just before ext_authz, keyed by client
	// address (RateLimit.BeforeAuthz).
	ClientRateLimitFilter = "wsedge.local_ratelimit.client"
	// RateLimitUserKey is the descriptor key holding the user.
	RateLimitUserKey = "user"
	// RateLimitAnonymous is RateLimitUserKey's value without a user.
	RateLimitAnonymous = "anonymous"
	// RateLimitClientKey is the descriptor key Envoy's
	// masked_remote_address action emits (fixed by Envoy).
	RateLimitClientKey = "masked_remote_address"
	// RateLimitDetails is the response code detail Envoy gives a request
	// its local rate limit refused (access log field "details").
	RateLimitDetails = "local_rate_limited"
)

// Client address masks: one IPv4 address, one IPv6 /64 (one customer
// network, as go-chi/httprate's KeyByIP).
const (
	rateLimitV4Mask = 32
	rateLimitV6Mask = 64
)

// localRateLimitFilter is the per-user limiter after ext_authz, enabled on
// every route except those unlimited marks (probes, DERP, latency checks).
func localRateLimitFilter(c Config) (*hcmv3.HttpFilter, error) {
	if !c.RateLimit.Enabled() {
		return nil, nil
	}
	cfg := rateLimitBase(c, "rate_limit")
	anonymous := []*routev3.RateLimit_Action{userAction(RateLimitAnonymous)}
	anonymousEntries := []*ratelimitv3.RateLimitDescriptor_Entry{{Key: RateLimitUserKey, Value: RateLimitAnonymous}}
	if c.FastPath {
		// A fast-path request has no authz metadata: without this entry
		// it would also match the client bucket's descriptor.
		anonymous = append(anonymous, jwtUserAction(RateLimitTokenUserKey, RateLimitAnonymous))
		anonymousEntries = append(anonymousEntries, &ratelimitv3.RateLimitDescriptor_Entry{Key: RateLimitTokenUserKey, Value: RateLimitAnonymous})
	}
	cfg.RateLimits = []*routev3.RateLimit{
		{Actions: []*routev3.RateLimit_Action{userAction("")}},
		{Actions: append(anonymous, clientAction())},
	}
	if c.FastPath {
		// The verified token's user_id is what authz emits as
		// rate_limit_key: the same bucket on both paths (a request has
		// one of the two, never both).
		cfg.RateLimits = append(cfg.RateLimits, &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{jwtUserAction(RateLimitUserKey, "")}})
	}
	cfg.Descriptors = []*ratelimitv3.LocalRateLimitDescriptor{
		{
			Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: RateLimitUserKey}},
			TokenBucket: tokenBucket(c.RateLimit),
		},
		{
			Entries:     append(anonymousEntries, &ratelimitv3.RateLimitDescriptor_Entry{Key: RateLimitClientKey}),
			TokenBucket: tokenBucket(c.RateLimit),
		},
	}
	return httpFilter(LocalRateLimitFilter, cfg), nil
}

// clientRateLimitFilter limits every checked request by client address
// before ext_authz runs (RateLimit.BeforeAuthz), except on the routes
// unlimited marks.
func clientRateLimitFilter(c Config) (*hcmv3.HttpFilter, error) {
	if !c.RateLimit.Enabled() || !c.RateLimit.BeforeAuthz {
		return nil, nil
	}
	return httpFilter(ClientRateLimitFilter, clientRateLimit(c, "client_rate_limit")), nil
}

// preflightRateLimitFilter guards the preflight ext_proc (which may ask the
// primary who owns an app) by client address. It is disabled except on the
// subdomain preflight route, which carries the whole configuration
// (preflightRateLimitPerRoute).
func preflightRateLimitFilter(c Config) (*hcmv3.HttpFilter, error) {
	if !c.RateLimit.Enabled() || c.WildcardHostname == "" {
		return nil, nil
	}
	f := httpFilter(PreflightRateLimitFilter, &localratelimitv3.LocalRateLimit{StatPrefix: "preflight_rate_limit"})
	f.Disabled = true
	return f, nil
}

// preflightRateLimitPerRoute is the preflight route's limiter: one bucket
// per client address.
func preflightRateLimitPerRoute(c Config) *localratelimitv3.LocalRateLimit {
	return clientRateLimit(c, "preflight_rate_limit")
}

// clientRateLimit is a limiter with one bucket per client address. Envoy
// requires a default bucket next to the descriptors; it is consumed only
// by a request that matched no descriptor (a client without an IP
// address).
func clientRateLimit(c Config, statPrefix string) *localratelimitv3.LocalRateLimit {
	cfg := rateLimitBase(c, statPrefix)
	cfg.TokenBucket = tokenBucket(c.RateLimit)
	cfg.RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{clientAction()}}}
	cfg.Descriptors = []*ratelimitv3.LocalRateLimitDescriptor{{
		Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: RateLimitClientKey}},
		TokenBucket: tokenBucket(c.RateLimit),
	}}
	return cfg
}

// rateLimitBase holds what both limiters share: always on and enforced
// (runtime keys let an operator dial either down), 429 with Retry-After,
// no default bucket shared by all keys, bounded bucket caches.
func rateLimitBase(c Config, statPrefix string) *localratelimitv3.LocalRateLimit {
	all := func(key string) *corev3.RuntimeFractionalPercent {
		return &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
			RuntimeKey:   "wsedge." + statPrefix + "." + key,
		}
	}
	return &localratelimitv3.LocalRateLimit{
		StatPrefix:                      statPrefix,
		Status:                          &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
		FilterEnabled:                   all("enabled"),
		FilterEnforced:                  all("enforced"),
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		MaxDynamicDescriptors:           wrapperspb.UInt32(uint32(c.RateLimit.MaxKeys)),
		EnableRetryAfterHeader:          true,
	}
}

// tokenBucket holds Burst tokens and refills Requests every Interval.
func tokenBucket(r RateLimit) *typev3.TokenBucket {
	return &typev3.TokenBucket{
		MaxTokens:     uint32(r.burst()),
		TokensPerFill: wrapperspb.UInt32(uint32(r.Requests)),
		FillInterval:  durationpb.New(r.Interval),
	}
}

// userAction reads authz's rate_limit_key metadata into the "user" entry;
// without the metadata it yields def, or skips the descriptor when def is
// empty.
func userAction(def string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
		DescriptorKey: RateLimitUserKey,
		MetadataKey: &metadatav3.MetadataKey{
			Key:  edgewire.MetadataNamespace,
			Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: edgewire.MetaRateLimitKey}}},
		},
		DefaultValue: def,
		Source:       routev3.RateLimit_Action_MetaData_DYNAMIC,
	}}}
}

// clientAction is the client address, masked.
func clientAction() *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_MaskedRemoteAddress_{MaskedRemoteAddress: &routev3.RateLimit_Action_MaskedRemoteAddress{
		V4PrefixMaskLen: wrapperspb.UInt32(rateLimitV4Mask),
		V6PrefixMaskLen: wrapperspb.UInt32(rateLimitV6Mask),
	}}}
}

// unlimited turns the limiters off for r (health probes, DERP, latency
// checks): an edge must never answer its own probes with 429.
func unlimited(c Config, r *routev3.Route) *routev3.Route {
	if !c.RateLimit.Enabled() {
		return r
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[LocalRateLimitFilter] = typed(&routev3.FilterConfig{Disabled: true})
	if c.RateLimit.BeforeAuthz {
		r.TypedPerFilterConfig[ClientRateLimitFilter] = typed(&routev3.FilterConfig{Disabled: true})
	}
	return r
}

// RateLimitMessage is the JSON body of a 429, worded as Coder's own rate
// limiter words it ("…more than 512 requests in 1m0s.").
func RateLimitMessage(r RateLimit) string {
	b, err := coderhttp.EncodeJSON(coderhttp.Response{
		Message: fmt.Sprintf("You've been rate limited for sending more than %d requests in %s.", r.Requests, r.Interval),
	})
	if err != nil {
		panic("envoy: rate limit message: " + err.Error()) // a string field cannot fail
	}
	return string(b)
}

// localReplyConfig gives rate-limited requests a JSON body instead of
// Envoy's "local_rate_limited" text. It matches the limiter's response code
// details, so 429s that authz relays from the primary keep their own body.
// (The limiter sets its RL response flag only after the local reply is
// built, so a response_flag_filter never matches.)
// Every config also adds Retry-After to Envoy's own 503s (retryAfterMapper).
func localReplyConfig(c Config) *hcmv3.LocalReplyConfig {
	mappers := []*hcmv3.ResponseMapper{retryAfterMapper()}
	if !c.RateLimit.Enabled() {
		return &hcmv3.LocalReplyConfig{Mappers: mappers}
	}
	return &hcmv3.LocalReplyConfig{Mappers: append([]*hcmv3.ResponseMapper{{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{
			ExtensionFilter: &accesslogv3.ExtensionFilter{
				Name: "envoy.access_loggers.extension_filters.cel",
				ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: typed(&celv3.ExpressionFilter{
					Expression: "response.code_details == '" + RateLimitDetails + "'",
				})},
			},
		}},
		Body: inlineString(RateLimitMessage(c.RateLimit)),
		BodyFormatOverride: &corev3.SubstitutionFormatString{
			Format:      &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: inlineString("%LOCAL_REPLY_BODY%")},
			ContentType: "application/json; charset=utf-8",
		},
	}}, mappers...)}
}
