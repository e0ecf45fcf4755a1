package coordinate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
	"storj.io/drpc"
	"storj.io/drpc/drpcconn"
	"storj.io/drpc/drpcmanager"
	"storj.io/drpc/drpcwire"
)

// MaxMessageSize is the largest DRPC message accepted, the same 4 MiB limit
// Coder's DRPC helpers configure on both ends.
const MaxMessageSize = 4 << 20

// APIVersion is the tailnet API version we ask for: 2.0, the first DRPC
// version, is enough for Coordinate and StreamDERPMaps.
const APIVersion = "2.0"

// Header names carrying the credentials on the websocket upgrade.
const (
	ProxyTokenHeader   = "Coder-External-Proxy-Token"
	SessionTokenHeader = "Coder-Session-Token"
)

// Paths of the two coordination endpoints on the primary.
const (
	ProxyCoordinatePath = "/api/v2/workspaceproxies/me/coordinate"
	AgentRPCPath        = "/api/v2/workspaceagents/me/rpc"
)

// HandshakeError is returned when the primary answers the websocket upgrade
// with an HTTP error instead of 101; Message, Detail and Validations come from
// coderd's JSON error body when there is one.
type HandshakeError struct {
	StatusCode  int
	Message     string
	Detail      string
	Validations []Validation
}

// Validation is one entry of coderd's "validations" error array.
type Validation struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func (e *HandshakeError) Error() string {
	msg := fmt.Sprintf("coordinate handshake: status %d", e.StatusCode)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	for _, v := range e.Validations {
		msg += fmt.Sprintf(" (%s: %s)", v.Field, v.Detail)
	}
	return msg
}

// endpointURL resolves path against the primary's URL (dropping any path the
// primary URL has, as Coder's SDK does) and adds ?version=.
func endpointURL(primary *url.URL, path string) (string, error) {
	if primary == nil {
		return "", errors.New("primary URL is required")
	}
	switch primary.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return "", fmt.Errorf("primary URL %q: unsupported scheme", primary.Redacted())
	}
	u := primary.ResolveReference(&url.URL{Path: path})
	u.RawQuery = url.Values{"version": {APIVersion}}.Encode()
	return u.String(), nil
}

// rpcConn is one websocket+yamux connection carrying DRPC; every RPC opens a
// fresh yamux stream, which is how coderd's server expects to be called.
type rpcConn struct {
	ws      *websocket.Conn
	session *yamux.Session
}

var _ drpc.Conn = (*rpcConn)(nil)

// dialRPC opens the websocket (binary messages treated as a byte stream),
// then a yamux client session over it. ctx bounds the handshake; connCtx
// bounds the connection's life.
func dialRPC(ctx, connCtx context.Context, hc *http.Client, target string, header http.Header, log *slog.Logger) (*rpcConn, error) {
	ws, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: header,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, handshakeError(resp)
		}
		return nil, fmt.Errorf("coordinate dial: %w", err)
	}
	nc := websocket.NetConn(connCtx, ws, websocket.MessageBinary)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = nil
	cfg.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	sess, err := yamux.Client(nc, cfg)
	if err != nil {
		_ = ws.Close(websocket.StatusInternalError, "yamux")
		return nil, fmt.Errorf("coordinate yamux: %w", err)
	}
	return &rpcConn{ws: ws, session: sess}, nil
}

func handshakeError(resp *http.Response) error {
	he := &HandshakeError{StatusCode: resp.StatusCode}
	if resp.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var payload struct {
			Message     string       `json:"message"`
			Detail      string       `json:"detail"`
			Validations []Validation `json:"validations"`
		}
		if strings.Contains(resp.Header.Get("Content-Type"), "json") && json.Unmarshal(body, &payload) == nil {
			he.Message, he.Detail, he.Validations = payload.Message, payload.Detail, payload.Validations
		} else {
			he.Message = strings.TrimSpace(string(body))
			if len(he.Message) > 200 {
				he.Message = he.Message[:200]
			}
		}
	}
	return he
}

func drpcOptions() drpcconn.Options {
	return drpcconn.Options{Manager: drpcmanager.Options{
		Reader: drpcwire.ReaderOptions{MaximumBufferSize: MaxMessageSize},
	}}
}

// Close tears down the yamux session and the websocket.
func (c *rpcConn) Close() error {
	err := c.session.Close()
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	return err
}

// Closed is closed once the yamux session is gone.
func (c *rpcConn) Closed() <-chan struct{} { return c.session.CloseChan() }

// Invoke runs one unary RPC on its own yamux stream.
func (c *rpcConn) Invoke(ctx context.Context, rpc string, enc drpc.Encoding, in, out drpc.Message) error {
	st, err := c.session.Open()
	if err != nil {
		return fmt.Errorf("open yamux stream: %w", err)
	}
	dc := drpcconn.NewWithOptions(st, drpcOptions())
	defer func() { _ = dc.Close() }()
	return dc.Invoke(ctx, rpc, enc, in, out)
}

// NewStream starts a streaming RPC on its own yamux stream, closed when the
// DRPC stream ends.
func (c *rpcConn) NewStream(ctx context.Context, rpc string, enc drpc.Encoding) (drpc.Stream, error) {
	st, err := c.session.Open()
	if err != nil {
		return nil, fmt.Errorf("open yamux stream: %w", err)
	}
	dc := drpcconn.NewWithOptions(st, drpcOptions())
	s, err := dc.NewStream(ctx, rpc, enc)
	if err != nil {
		_ = dc.Close()
		return nil, err
	}
	go func() {
		<-s.Context().Done()
		_ = dc.Close()
	}()
	return s, nil
}
