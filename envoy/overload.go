package envoy

import (
	"fmt"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	downstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Limits are Envoy's own bounds on a burst: the overload manager (heap
// and downstream connections) and the circuit breakers of the authz and
// dialer clusters. Every field has a flag; zero takes the default.
// Envoy's answers to what they shed are 503s carrying Retry-After
// (localReplyMappers), except connections beyond MaxDownstreamConnections,
// which are closed as they are accepted.
type Limits struct {
	// MaxHeapBytes is the heap Envoy may use: at 90% it returns free
	// memory to the system, at 95% it answers new requests 503.
	MaxHeapBytes uint64
	// MaxDownstreamConnections bounds client connections, all listeners
	// together.
	MaxDownstreamConnections uint64
	// AuthzMaxRequests bounds concurrent ext_authz Checks plus ext_proc
	// streams to authz (one HTTP/2 cluster); beyond it requests are
	// answered 503 (status_on_error).
	AuthzMaxRequests uint
	// DialerMaxRequests bounds concurrent requests to the dialer, open
	// websockets included (HTTP/1.1: one connection each).
	DialerMaxRequests uint
	// DialerMaxPendingRequests bounds requests waiting for a dialer
	// connection when DialerMaxRequests are in flight.
	DialerMaxPendingRequests uint
}

// Defaults for a small deployment: an Envoy with 1 GiB of memory, a few
// thousand concurrent users, and room for the websockets they hold.
const (
	DefaultMaxHeapBytes             = 1 << 30
	DefaultMaxDownstreamConnections = 10000
	DefaultAuthzMaxRequests         = 1024
	DefaultDialerMaxRequests        = 8192
	DefaultDialerMaxPendingRequests = 1024
)

// DefaultLimits are the defaults spelt out (flag defaults show them).
func DefaultLimits() Limits {
	return Limits{
		MaxHeapBytes:             DefaultMaxHeapBytes,
		MaxDownstreamConnections: DefaultMaxDownstreamConnections,
		AuthzMaxRequests:         DefaultAuthzMaxRequests,
		DialerMaxRequests:        DefaultDialerMaxRequests,
		DialerMaxPendingRequests: DefaultDialerMaxPendingRequests,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxHeapBytes == 0 {
		l.MaxHeapBytes = d.MaxHeapBytes
	}
	if l.MaxDownstreamConnections == 0 {
		l.MaxDownstreamConnections = d.MaxDownstreamConnections
	}
	if l.AuthzMaxRequests == 0 {
		l.AuthzMaxRequests = d.AuthzMaxRequests
	}
	if l.DialerMaxRequests == 0 {
		l.DialerMaxRequests = d.DialerMaxRequests
	}
	if l.DialerMaxPendingRequests == 0 {
		l.DialerMaxPendingRequests = d.DialerMaxPendingRequests
	}
	return l
}

// RetryAfterSeconds is the Retry-After Envoy adds to the 503s it makes.
const RetryAfterSeconds = 1

// Resource monitor and overload action names.
const (
	fixedHeapMonitor        = "envoy.resource_monitors.fixed_heap"
	downstreamConnsMonitor  = "envoy.resource_monitors.global_downstream_max_connections"
	shrinkHeapAction        = "envoy.overload_actions.shrink_heap"
	stopAcceptingRequests   = "envoy.overload_actions.stop_accepting_requests"
	overloadRefreshInterval = 250 * time.Millisecond
)

// overloadManager watches Envoy's heap and its client connections.
func overloadManager(c Config) *overloadv3.OverloadManager {
	l := c.Limits.withDefaults()
	threshold := func(v float64) *overloadv3.Trigger {
		return &overloadv3.Trigger{
			Name:         fixedHeapMonitor,
			TriggerOneof: &overloadv3.Trigger_Threshold{Threshold: &overloadv3.ThresholdTrigger{Value: v}},
		}
	}
	return &overloadv3.OverloadManager{
		RefreshInterval: durationpb.New(overloadRefreshInterval),
		ResourceMonitors: []*overloadv3.ResourceMonitor{
			{Name: fixedHeapMonitor, ConfigType: &overloadv3.ResourceMonitor_TypedConfig{
				TypedConfig: typed(&fixedheapv3.FixedHeapConfig{MaxHeapSizeBytes: l.MaxHeapBytes}),
			}},
			{Name: downstreamConnsMonitor, ConfigType: &overloadv3.ResourceMonitor_TypedConfig{
				TypedConfig: typed(&downstreamv3.DownstreamConnectionsConfig{MaxActiveDownstreamConnections: int64(l.MaxDownstreamConnections)}),
			}},
		},
		Actions: []*overloadv3.OverloadAction{
			{Name: shrinkHeapAction, Triggers: []*overloadv3.Trigger{threshold(0.90)}},
			{Name: stopAcceptingRequests, Triggers: []*overloadv3.Trigger{threshold(0.95)}},
		},
	}
}

// authzCircuitBreakers bound the streams Envoy opens to authz.
func authzCircuitBreakers(c Config) *clusterv3.CircuitBreakers {
	l := c.Limits.withDefaults()
	return circuitBreakers(l.AuthzMaxRequests, l.AuthzMaxRequests, l.AuthzMaxRequests)
}

// dialerCircuitBreakers bound the requests (and so, over HTTP/1.1, the
// connections) Envoy opens to the dialer.
func dialerCircuitBreakers(c Config) *clusterv3.CircuitBreakers {
	l := c.Limits.withDefaults()
	return circuitBreakers(l.DialerMaxRequests, l.DialerMaxRequests, l.DialerMaxPendingRequests)
}

// circuitBreakers are default-priority thresholds without retries: wsedge
// configures no retry policy, and a retry of a shed request would only
// add to the burst.
func circuitBreakers(maxConns, maxRequests, maxPending uint) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(uint32(maxConns)),
		MaxRequests:        wrapperspb.UInt32(uint32(maxRequests)),
		MaxPendingRequests: wrapperspb.UInt32(uint32(maxPending)),
		MaxRetries:         wrapperspb.UInt32(0),
	}}}
}

// retryAfterMapper adds Retry-After to the 503s Envoy makes itself —
// overflowing circuit breakers, the overload manager, authz unreachable
// (status_on_error) — so clients back off and retry as they do for the
// services' own 503s. Denials authz makes carry their own headers and are
// left alone.
func retryAfterMapper() *hcmv3.ResponseMapper {
	return &hcmv3.ResponseMapper{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{
			ExtensionFilter: &accesslogv3.ExtensionFilter{
				Name: "envoy.access_loggers.extension_filters.cel",
				ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: typed(&celv3.ExpressionFilter{
					Expression: fmt.Sprintf("response.code == %d && response.code_details != 'ext_authz_denied'", typev3.StatusCode_ServiceUnavailable),
				})},
			},
		}},
		HeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "retry-after", Value: strconv.Itoa(RetryAfterSeconds)},
			AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT,
		}},
	}
}
