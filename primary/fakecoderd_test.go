package primary

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/tokens"
)

// fakeCoderd answers the proxy API the way coderd does, per the protocol
// reference (docs/protocol.md#proxy-api): the proxy-token middleware with its 401 messages, the
// feature whitelist of crypto-keys, 201/204 statuses, the error shape.
type fakeCoderd struct {
	proxyID uuid.UUID
	secret  string

	mu         sync.Mutex
	keys       map[tokens.Feature][]CryptoKey
	registered map[uuid.UUID]RegisterRequest
	stopped    map[uuid.UUID]bool
	stats      []StatsReport
	requests   []*recordedRequest
	// issue, when set, answers issue calls.
	issue func(w http.ResponseWriter, r *http.Request, req IssueTokenRequest)
	// owners maps "user/workspace" to the owner.
	owners map[string]uuid.UUID
	// regResponse shapes register answers.
	regResponse func(req RegisterRequest) RegisterResponse
	// failRegister, when set, makes register answer 500.
	failRegister bool
}

type recordedRequest struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

func newFakeCoderd(t testing.TB) (*fakeCoderd, *httptest.Server) {
	t.Helper()
	f := &fakeCoderd{
		proxyID:    uuid.MustParse("aaaaaaaa-0000-4000-8000-000000000001"),
		secret:     strings.Repeat("ab", 32),
		keys:       map[tokens.Feature][]CryptoKey{},
		registered: map[uuid.UUID]RegisterRequest{},
		stopped:    map[uuid.UUID]bool{},
		owners:     map[string]uuid.UUID{},
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeCoderd) token() string { return f.proxyID.String() + ":" + f.secret }

func (f *fakeCoderd) client(t testing.TB, srv *httptest.Server, mut ...func(*Options)) *Client {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	opts := Options{URL: u, ProxyToken: f.token(), Timeout: 5 * time.Second}
	for _, m := range mut {
		m(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fakeCoderd) last() *recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return nil
	}
	return f.requests[len(f.requests)-1]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type errBody struct {
	Message     string            `json:"message"`
	Detail      string            `json:"detail,omitempty"`
	Validations []ValidationError `json:"validations,omitempty"`
}

func (f *fakeCoderd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, &recordedRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
	f.mu.Unlock()

	if r.URL.Path == pathBuildInfo {
		writeJSON(w, 200, BuildInfo{ExternalURL: "https://coder.example.com", Version: "v2.99.1+abc", AgentAPIVersion: "1.0", DashboardURL: "https://coder.example.com", DeploymentID: "dep-1"})
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/api/v2/workspaceproxies/me/") {
		writeJSON(w, 404, errBody{Message: "Route not found."})
		return
	}
	if !f.auth(w, r) {
		return
	}
	switch r.URL.Path {
	case pathCryptoKeys:
		feat := r.URL.Query().Get("feature")
		switch feat {
		case "":
			writeJSON(w, 400, errBody{Message: "Missing feature query parameter."})
			return
		case string(tokens.FeatureAppToken), string(tokens.FeatureAPIKey):
		default:
			writeJSON(w, 400, errBody{Message: fmt.Sprintf("Invalid feature: %q", feat)})
			return
		}
		f.mu.Lock()
		ks := append([]CryptoKey{}, f.keys[tokens.Feature(feat)]...)
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"crypto_keys": ks})
	case pathRegister:
		var req RegisterRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeJSON(w, 400, errBody{Message: "Request body must be valid JSON.", Detail: err.Error()})
			return
		}
		if req.ReplicaID == uuid.Nil {
			writeJSON(w, 400, errBody{Message: "Replica ID is invalid."})
			return
		}
		f.mu.Lock()
		stopped, fail := f.stopped[req.ReplicaID], f.failRegister
		if !stopped && !fail {
			f.registered[req.ReplicaID] = req
		}
		shape := f.regResponse
		f.mu.Unlock()
		if fail {
			writeJSON(w, 500, errBody{Message: "Internal error registering proxy.", Detail: "database is down"})
			return
		}
		if stopped {
			writeJSON(w, 500, errBody{Message: "Internal error upserting replica.", Detail: fmt.Sprintf("replica %s is marked stopped", req.ReplicaID)})
			return
		}
		res := RegisterResponse{DERPMeshKey: "mesh-key-1", DERPRegionID: 10001}
		if shape != nil {
			res = shape(req)
		}
		writeJSON(w, 201, res)
	case pathDeregister:
		var req deregisterRequest
		_ = json.Unmarshal(body, &req)
		f.mu.Lock()
		_, known := f.registered[req.ReplicaID]
		stopped := f.stopped[req.ReplicaID]
		if known && !stopped {
			f.stopped[req.ReplicaID] = true
		}
		f.mu.Unlock()
		switch {
		case !known:
			writeJSON(w, 404, errBody{Message: "Resource not found or you do not have access to this resource"})
		case stopped:
			writeJSON(w, 500, errBody{Message: "Internal error marking replica stopped.", Detail: "replica already stopped"})
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	case pathIssueToken:
		var req IssueTokenRequest
		_ = json.Unmarshal(body, &req)
		if f.issue != nil {
			f.issue(w, r, req)
			return
		}
		writeJSON(w, 201, map[string]string{"signed_token_str": "header.payload.sig"})
	case pathResolveAppOwner:
		var req resolveAppOwnerRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeJSON(w, 400, errBody{Message: "Invalid app request."})
			return
		}
		if req.AppRequest.AccessMethod != "subdomain" {
			writeJSON(w, 400, errBody{Message: "Invalid access method."})
			return
		}
		f.mu.Lock()
		owner, ok := f.owners[req.AppRequest.UsernameOrID+"/"+req.AppRequest.WorkspaceNameOrID]
		f.mu.Unlock()
		if !ok {
			writeJSON(w, 404, errBody{Message: "Application not found."})
			return
		}
		writeJSON(w, 200, map[string]any{"owner_id": owner})
	case pathAppStats:
		var req reportAppStatsRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeJSON(w, 400, errBody{Message: "Request body must be valid JSON."})
			return
		}
		f.mu.Lock()
		f.stats = append(f.stats, req.Stats...)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, 404, errBody{Message: "Route not found."})
	}
}

// auth mirrors coderd's proxy-token middleware (docs/protocol.md#proxy-api).
func (f *fakeCoderd) auth(w http.ResponseWriter, r *http.Request) bool {
	tok := r.Header.Get(ProxyTokenHeader)
	if tok == "" {
		writeJSON(w, 401, errBody{Message: "Missing required external proxy token"})
		return false
	}
	parts := strings.Split(tok, ":")
	invalid := func(detail string) bool {
		writeJSON(w, 401, errBody{Message: "Invalid external proxy token", Detail: detail})
		return false
	}
	if len(parts) != 2 {
		return invalid("Invalid token format.")
	}
	id, err := uuid.Parse(parts[0])
	if err != nil || len(parts[1]) != 64 {
		return invalid("Invalid token format.")
	}
	if id != f.proxyID {
		return invalid("Proxy not found.")
	}
	if parts[1] != f.secret {
		return invalid("Invalid proxy token secret.")
	}
	return true
}

// wireKey is a key in coderd's wire form.
func wireKey(k tokens.Key) CryptoKey {
	return CryptoKey{Feature: string(k.Feature), Secret: hex.EncodeToString(k.Secret), DeletesAt: k.DeletesAt, Sequence: k.Sequence, StartsAt: k.StartsAt}
}

func testKey(t testing.TB, f tokens.Feature, seq int32, startsAt, deletesAt time.Time) tokens.Key {
	t.Helper()
	n := 64
	if f == tokens.FeatureAPIKey {
		n = 32
	}
	secret := make([]byte, n)
	for i := range secret {
		secret[i] = byte(int(seq)*7 + i)
	}
	k, err := tokens.ParseKey(f, hex.EncodeToString(secret), seq, startsAt, deletesAt)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
