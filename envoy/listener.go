package envoy

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// edgeListener is the one public listener: optional TLS, then the HTTP
// connection manager.
func edgeListener(c Config) (*listenerv3.Listener, error) {
	m, err := connectionManager(c)
	if err != nil {
		return nil, err
	}
	chain := &listenerv3.FilterChain{
		Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(m)},
		}},
	}
	if c.TLSCertFile != "" {
		chain.TransportSocket = downstreamTLS(c)
	}
	return &listenerv3.Listener{
		Name:                          ListenerName,
		Address:                       socketAddress(c.ListenAddr.Addr().String(), uint32(c.ListenAddr.Port())),
		FilterChains:                  []*listenerv3.FilterChain{chain},
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(edgeBufferLimit),
	}, nil
}

// Envoy's defaults suit a service mesh; an edge takes the limits Envoy's
// own edge guidance gives, so a client cannot make Envoy hold much for
// it: 32 KiB buffered per connection in either direction before Envoy
// stops reading (the client's and the dialer's sides; a bulk transfer
// waits for the slower side instead of piling up in Envoy), and for
// HTTP/2 clients at most 100 concurrent streams, 64 KiB in flight per
// stream and 1 MiB per connection (Envoy 1.40's defaults: 1,024 streams,
// 16 MiB per stream and 24 MiB per connection, which one client may send
// before flow control holds it back). An HTTP/2 upload then moves at most
// 64 KiB per stream per round trip.
const (
	edgeBufferLimit          = 32 << 10
	edgeMaxConcurrentStreams = 100
	edgeStreamWindow         = 64 << 10
	edgeConnectionWindow     = 1 << 20
)

// downstreamTLS terminates TLS with the configured certificate, offering
// HTTP/2 and HTTP/1.1.
func downstreamTLS(c Config) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: c.TLSCertFile}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: c.TLSKeyFile}},
			}},
			AlpnProtocols: []string{"h2", "http/1.1"},
		},
	}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed(ctx)},
	}
}

// connectionManager is the HTTP connection manager: edge trust settings,
// websocket-friendly timeouts, upgrades, the filter chain, routes and the
// access log.
func connectionManager(c Config) (*hcmv3.HttpConnectionManager, error) {
	filters, err := httpFilters(c)
	if err != nil {
		return nil, err
	}
	rc, err := routeConfiguration(c)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpConnectionManager{
		StatPrefix: "edge",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		// Envoy is the edge: the client address is the peer unless hops in
		// front are trusted; X-Forwarded-For is appended to, never trusted
		// beyond those hops, and Envoy's x-envoy-* headers from clients are
		// not honoured.
		UseRemoteAddress:  wrapperspb.Bool(true),
		XffNumTrustedHops: uint32(c.XFFNumTrustedHops),
		SkipXffAppend:     false,
		// Matching ignores the port (see routeConfiguration) and a trailing
		// dot; the Host header otherwise reaches authz and the dialer as sent.
		StripTrailingHostDot: true,
		// Paths are not normalised: apps get the path the browser sent, as
		// with Coder's proxy. Routes that skip ext_authz match exact paths.
		// An app's Server header reaches the browser as the app sent it,
		// and Envoy adds none (its default writes "envoy" over the app's):
		// Coder's proxy, a Go server, adds none either.
		ServerHeaderTransformation: hcmv3.HttpConnectionManager_PASS_THROUGH,
		RequestHeadersTimeout:      durationpb.New(c.RequestHeadersTimeout),
		StreamIdleTimeout:          durationpb.New(c.StreamIdleTimeout),
		RequestTimeout:             durationpb.New(0),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout: durationpb.New(c.UpgradeIdleTimeout),
			// Client headers spelt with underscores (X_Forwarded_For,
			// X_Coder_User_Id, X_Wsedge_App_Token) are dropped before any
			// filter runs. The header-removal rules only know the dash
			// spellings, and servers that fold '_' into '-' (uWSGI; Puma
			// before 6.4.3/5.6.9, CVE-2024-45614) would read these as the
			// real headers. DROP_HEADER rather than REJECT_REQUEST: a
			// legitimate client that happens to send one (some CLIs and
			// SDKs do) keeps working, and Coder's own clients never
			// send underscores.
			HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_DROP_HEADER,
		},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
			// RFC 8441 websockets from HTTP/2 browsers, sent upstream as
			// HTTP/1.1 upgrades. Envoy adds no Sec-WebSocket-Key to
			// them (the 400s behind envoy#38645 / #8547); the dialer adds
			// one for the app. Several such websockets on one connection
			// are covered by e2e TestWebsocketsOverOneHTTP2Connection.
			AllowConnect:                true,
			MaxConcurrentStreams:        wrapperspb.UInt32(edgeMaxConcurrentStreams),
			InitialStreamWindowSize:     wrapperspb.UInt32(edgeStreamWindow),
			InitialConnectionWindowSize: wrapperspb.UInt32(edgeConnectionWindow),
		},
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{
			{UpgradeType: "websocket"},
			// Tailscale's DERP upgrade; enabled only on the /derp route.
			{UpgradeType: derpUpgrade, Enabled: wrapperspb.Bool(false)},
		},
		RouteSpecifier:   &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters:      filters,
		LocalReplyConfig: localReplyConfig(c),
		AccessLog:        accessLogs(c),
		Tracing:          connectionManagerTracing(c),
	}, nil
}

// httpFilters is the ordered HTTP filter chain. Each entry is one function
// returning one filter (or nil when that feature is off); rate limiting
// (issue 5) runs after ext_authz so that the user is known. The ext_proc filter after
// ext_authz must stay after it: on the response path Envoy runs encoders in
// reverse, so ext_proc sees the app's headers before ext_authz adds its own
// (the signed token cookie), and never strips what authz set.
func httpFilters(c Config) ([]*hcmv3.HttpFilter, error) {
	builders := []func(Config) (*hcmv3.HttpFilter, error){
		stripInternalHeadersFilter, // must precede ext_authz
		corsFilter,
		preflightRateLimitFilter, // issue 5: by client, guards the preflight ext_proc
		extProcPreflightFilter,   // issue 8: same-owner preflights, before ext_authz
		clientRateLimitFilter,    // by client, every checked request (RateLimit.BeforeAuthz)
		jwtAuthnFilter,           // fast path: verifies the token cookie, never refuses
		extAuthzFilter,           // skipped when jwt_authn verified (fast path)
		localRateLimitFilter,     // issue 5: by user from ext_authz metadata, else client
		extProcFilter,            // issue 8: app CORS and response policy
		routerFilter,
	}
	var out []*hcmv3.HttpFilter
	for _, b := range builders {
		f, err := b(c)
		if err != nil {
			return nil, fmt.Errorf("envoy: http filters: %w", err)
		}
		if f != nil {
			out = append(out, f)
		}
	}
	return out, nil
}
