package appurl

import (
	"errors"
	"testing"

	"github.com/google/uuid"
)

func TestParsePathApp(t *testing.T) {
	tests := []struct {
		path     string
		ok       bool
		err      error
		want     Request
		wantPath string
	}{
		{path: "/@alice/dev.main/apps/code/", ok: true, want: Request{AccessMethod: AccessMethodPath, BasePath: "/@alice/dev.main/apps/code/", UsernameOrID: "alice", WorkspaceAndAgent: "dev.main", AppSlugOrPort: "code"}, wantPath: "/"},
		{path: "/%40alice/dev/apps/code/a/b%20c", ok: true, want: Request{AccessMethod: AccessMethodPath, BasePath: "/@alice/dev/apps/code/", UsernameOrID: "alice", WorkspaceAndAgent: "dev", AppSlugOrPort: "code"}, wantPath: "/a/b c"},
		{path: "/%40alice/dev/apps/code", ok: true, want: Request{AccessMethod: AccessMethodPath, BasePath: "/@alice/dev/apps/code/", UsernameOrID: "alice", WorkspaceAndAgent: "dev", AppSlugOrPort: "code"}, wantPath: ""},
		{path: "/@me/dev/apps/code/", ok: true, err: ErrMeUsername},
		{path: "/@alice//apps/code/", ok: true, err: ErrEmptyPathSegment},
		{path: "/@alice/.main/apps/code/", ok: true, err: ErrEmptyPathSegment},
		{path: "/@alice/./apps/code/", ok: true, err: ErrEmptyPathSegment},
		{path: "/@/dev/apps/code/", ok: true, err: ErrEmptyPathSegment},
		{path: "/@alice/dev/apps//", ok: true, err: ErrEmptyPathSegment},
		{path: "/@alice/dev/apps/%zz/", ok: true, err: ErrBadPathEscape},
		{path: "/@alice/dev/apps/code/%zz", ok: true, err: ErrBadPathEscape},
		{path: "/@alice/dev/notapps/code/", ok: false},
		{path: "/@alice/dev", ok: false},
		{path: "/api/v2/buildinfo", ok: false},
		{path: "/alice/dev/apps/code/", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req, appPath, ok, err := ParsePathApp(tt.path)
			if ok != tt.ok || !errors.Is(err, tt.err) {
				t.Fatalf("ok %v err %v, want %v %v", ok, err, tt.ok, tt.err)
			}
			if tt.err != nil || !ok {
				return
			}
			if req != tt.want || appPath != tt.wantPath {
				t.Fatalf("got %+v %q, want %+v %q", req, appPath, tt.want, tt.wantPath)
			}
			n := req.Normalize()
			if err := n.Check(); err != nil {
				t.Fatalf("parsed request fails Check: %v", err)
			}
		})
	}
}

func TestNormalizeAndCheck(t *testing.T) {
	r := Request{AccessMethod: AccessMethodPath, BasePath: "/@a/ws.ag.x/apps/app", UsernameOrID: "a", WorkspaceAndAgent: "ws.ag.x", AppSlugOrPort: "app"}.Normalize()
	if r.WorkspaceNameOrID != "ws" || r.AgentNameOrID != "ag.x" || r.BasePath != "/@a/ws.ag.x/apps/app/" || r.WorkspaceAndAgent != "" {
		t.Fatalf("normalize: %+v", r)
	}
	agent := uuid.NewString()
	bad := map[string]Request{
		"unknown method":          {AccessMethod: "tcp", BasePath: "/"},
		"no base path":            {AccessMethod: AccessMethodSubdomain, UsernameOrID: "a", WorkspaceNameOrID: "b", AppSlugOrPort: "c"},
		"terminal with a user":    {AccessMethod: AccessMethodTerminal, BasePath: "/", AgentNameOrID: agent, UsernameOrID: "a"},
		"terminal agent not uuid": {AccessMethod: AccessMethodTerminal, BasePath: "/", AgentNameOrID: "main"},
		"me":                      {AccessMethod: AccessMethodSubdomain, BasePath: "/", UsernameOrID: "me", WorkspaceNameOrID: "b", AppSlugOrPort: "c"},
		"no workspace":            {AccessMethod: AccessMethodSubdomain, BasePath: "/", UsernameOrID: "a", AppSlugOrPort: "c"},
		"no app":                  {AccessMethod: AccessMethodSubdomain, BasePath: "/", UsernameOrID: "a", WorkspaceNameOrID: "b"},
		"prefix on a path app":    {AccessMethod: AccessMethodPath, BasePath: "/", UsernameOrID: "a", WorkspaceNameOrID: "b", AppSlugOrPort: "c", Prefix: "x---"},
		"prefix without dashes":   {AccessMethod: AccessMethodSubdomain, BasePath: "/", UsernameOrID: "a", WorkspaceNameOrID: "b", AppSlugOrPort: "c", Prefix: "x"},
		"unsplit workspace agent": {AccessMethod: AccessMethodPath, BasePath: "/", UsernameOrID: "a", WorkspaceAndAgent: "b.c", AppSlugOrPort: "c"},
	}
	for name, r := range bad {
		if err := r.Check(); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if err := (Request{AccessMethod: AccessMethodTerminal, BasePath: "/x/", AgentNameOrID: agent}).Check(); err != nil {
		t.Errorf("terminal: %v", err)
	}
}

func TestParseTerminalPath(t *testing.T) {
	id := "123e4567-e89b-12d3-a456-426614174000"
	if got, ok := ParseTerminalPath("/api/v2/workspaceagents/" + id + "/pty"); !ok || got != id {
		t.Fatalf("got %q %v", got, ok)
	}
	for _, p := range []string{"/api/v2/workspaceagents/main/pty", "/api/v2/workspaceagents/" + id + "/pty/", "/api/v2/workspaceagents/" + id, "/api/v2/workspaceagents//pty"} {
		if _, ok := ParseTerminalPath(p); ok {
			t.Errorf("%s parsed as a terminal", p)
		}
	}
}

func TestHostnamePattern(t *testing.T) {
	bad := []string{"", "apps.example.com", "*.", ".*.example.com", "*.example.com.", "a*.example.com", "*.*.example.com", "*", "http://*.example.com", "*.exa_mple.com", "*.example.com:abc", "*.-bad.com"}
	for _, p := range bad {
		if _, err := CompileHostnamePattern(p); !errors.Is(err, ErrInvalidHostnamePattern) {
			t.Errorf("%q compiled (err %v)", p, err)
		}
	}
	tests := []struct {
		pattern, host, sub string
		ok                 bool
	}{
		{"*.apps.example.com", "code--main--dev--alice.apps.example.com", "code--main--dev--alice", true},
		{"*.apps.example.com", "code--main--dev--alice.apps.example.com.", "code--main--dev--alice", true},
		{"*.apps.example.com", "code--main--dev--alice.apps.example.com:8443", "code--main--dev--alice", true},
		{"*.apps.example.com", " x.apps.example.com ", "x", true},
		{"*.apps.example.com", "a.b.apps.example.com", "", false},
		{"*.apps.example.com", "apps.example.com", "", false},
		{"*.apps.example.com", "x.apps.example.com.evil.com", "", false},
		{"*.apps.example.com", "x.appsXexample.com", "", false},
		{"*.APPS.example.com", "x.apps.example.com", "x", true},
		{"*.apps.example.com", "X.APPS.EXAMPLE.COM", "", false},
		{"*--apps.example.com", "code--main--dev--alice--apps.example.com", "code--main--dev--alice", true},
		{"*.apps.example.com:443", "x.apps.example.com", "x", true},
	}
	for _, tt := range tests {
		p, err := CompileHostnamePattern(tt.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tt.pattern, err)
		}
		sub, ok := p.Match(tt.host)
		if ok != tt.ok || sub != tt.sub {
			t.Errorf("%s ~ %q = %q %v, want %q %v", tt.pattern, tt.host, sub, ok, tt.sub, tt.ok)
		}
	}
}

func TestSubdomainAppURL(t *testing.T) {
	tests := []struct {
		in   string
		want ApplicationURL
		err  bool
	}{
		{in: "code--main--dev--alice", want: ApplicationURL{AppSlugOrPort: "code", AgentName: "main", WorkspaceName: "dev", Username: "alice"}},
		{in: "8080--main--dev--alice", want: ApplicationURL{AppSlugOrPort: "8080", AgentName: "main", WorkspaceName: "dev", Username: "alice"}},
		{in: "pre---code--main--dev--alice", want: ApplicationURL{Prefix: "pre---", AppSlugOrPort: "code", AgentName: "main", WorkspaceName: "dev", Username: "alice"}},
		{in: "a---b---code--main--dev--alice", want: ApplicationURL{Prefix: "a---b---", AppSlugOrPort: "code", AgentName: "main", WorkspaceName: "dev", Username: "alice"}},
		{in: "my-app--my-agent--my-ws--my-user", want: ApplicationURL{AppSlugOrPort: "my-app", AgentName: "my-agent", WorkspaceName: "my-ws", Username: "my-user"}},
		{in: "code--dev--alice", err: true},
		{in: "code--main--dev--alice--extra", err: true},
		{in: "code---main--dev--alice", err: true},
		{in: "-code--main--dev--alice", err: true},
		{in: "co_de--main--dev--alice", err: true},
		{in: "", err: true},
		{in: "coder-logout", err: true},
	}
	for _, tt := range tests {
		got, err := ParseSubdomainAppURL(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidApplicationURL) {
				t.Errorf("%q: untyped error %v", tt.in, err)
			}
			continue
		}
		if got != tt.want || got.String() != tt.in {
			t.Errorf("%q: got %+v (%s)", tt.in, got, got.String())
		}
	}
	a := ApplicationURL{AppSlugOrPort: "8443s", AgentName: "main", WorkspaceName: "dev", Username: "alice"}
	if h := a.Hostname("*.apps.example.com"); h != "8443s--main--dev--alice.apps.example.com" {
		t.Errorf("hostname %s", h)
	}
}

func TestPortInfo(t *testing.T) {
	tests := []struct {
		in     string
		port   uint16
		https  bool
		isPort bool
	}{
		{"8080", 8080, false, true},
		{"8443s", 8443, true, true},
		{"0", 0, false, true},
		{"65535", 65535, false, true},
		{"65536", 0, false, false},
		{"code", 0, false, false},
		{"s", 0, false, false},
		{"+80", 0, false, false},
		{"80ss", 0, false, false},
	}
	for _, tt := range tests {
		p, h, ok := PortInfo(tt.in)
		if p != tt.port || h != tt.https || ok != tt.isPort {
			t.Errorf("%q: %d %v %v", tt.in, p, h, ok)
		}
	}
}

func TestPathAppBasePath(t *testing.T) {
	for _, tt := range []struct{ user, ws, agent, app, want string }{
		{"alice", "dev", "main", "code", "/@alice/dev.main/apps/code/"},
		{"alice", "dev", "", "8080", "/@alice/dev/apps/8080/"},
		{"a b", "w/x", "", "c?d", "/@a%20b/w%2Fx/apps/c%3Fd/"},
	} {
		got := PathAppBasePath(tt.user, tt.ws, tt.agent, tt.app)
		if got != tt.want {
			t.Errorf("PathAppBasePath(%q, %q, %q, %q) = %q, want %q", tt.user, tt.ws, tt.agent, tt.app, got, tt.want)
		}
		req, rest, ok, err := ParsePathApp(got)
		n := req.Normalize()
		if !ok || err != nil || rest != "/" || n.UsernameOrID != tt.user || n.WorkspaceNameOrID != tt.ws || n.AgentNameOrID != tt.agent || n.AppSlugOrPort != tt.app {
			t.Errorf("%q parses to %+v %q %v %v", got, n, rest, ok, err)
		}
	}
}
