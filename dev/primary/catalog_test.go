package devprimary

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemoCatalog(t *testing.T) {
	c := DemoCatalog()
	if len(c.Users) != 2 || c.Users[0].Username != "alice" || c.Users[1].Username != "bob" {
		t.Fatalf("users %+v", c.Users)
	}
	ws := c.Workspaces[0]
	if ws.Name != "dev" || ws.Owner != "alice" || len(ws.Agents) != 1 || ws.Agents[0].Name != "main" {
		t.Fatalf("workspace %+v", ws)
	}
	apps := map[string]App{}
	for _, a := range ws.Agents[0].Apps {
		apps[a.Slug] = a
	}
	for slug, url := range map[string]string{
		"code":   "http://127.0.0.1:8080",
		"echo":   "http://127.0.0.1:8081",
		"secure": "https://127.0.0.1:8443",
	} {
		if apps[slug].URL != url {
			t.Errorf("app %s url %q, want %q", slug, apps[slug].URL, url)
		}
	}
	if !apps["code"].Subdomain {
		t.Error("code is not a subdomain app")
	}
	// The demo's IDs are fixed: a restart keeps every URL and token valid.
	if again := DemoCatalog(); again.Workspaces[0].Agents[0].ID != ws.Agents[0].ID {
		t.Error("demo agent ID changes")
	}
}

func TestLoadCatalog(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(testCatalogYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCatalog(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Workspaces) != 3 {
		t.Fatalf("workspaces %d", len(c.Workspaces))
	}
	if _, err := LoadCatalog(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(p, []byte("users: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCatalog(p); !errors.Is(err, ErrInvalidCatalog) || !strings.Contains(err.Error(), p) {
		t.Fatalf("bad yaml: %v", err)
	}
}

func TestCatalogStrict(t *testing.T) {
	for _, tc := range []struct{ yaml, field string }{
		{"users:\n  - id: 00000000-0000-4000-8000-000000000001\n    username: a\n    pasword: x\n", `unknown field "pasword"`},
		{"deployment:\n  dangerous_allow_path_app_shareing: true\n", `unknown field "dangerous_allow_path_app_shareing"`},
		{"workspace: []\n", `unknown field "workspace"`},
	} {
		_, err := ParseCatalog([]byte(tc.yaml))
		if !errors.Is(err, ErrInvalidCatalog) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%q: error %v, want one naming %s", tc.yaml, err, tc.field)
		}
	}
}

func TestCatalogValidation(t *testing.T) {
	const u1 = "00000000-0000-4000-8000-000000000001"
	const u2 = "00000000-0000-4000-8000-000000000002"
	const w1 = "00000000-0000-4000-8000-000000000011"
	const a1 = "00000000-0000-4000-8000-000000000021"
	const tok = "00000000-0000-4000-8000-000000000031"
	user := func(id, name string) string {
		return "  - {id: " + id + ", username: " + name + "}\n"
	}
	ws := func(owner, agentID, appURL, extra string) string {
		return "workspaces:\n  - id: " + w1 + "\n    owner: " + owner + "\n    name: dev\n" + extra +
			"    agents:\n      - id: " + agentID + "\n        name: main\n        auth_token: " + tok + "\n" +
			"        apps:\n          - {slug: code, url: \"" + appURL + "\"}\n"
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"duplicate user id", "users:\n" + user(u1, "a") + user(u1, "b"),
			[]string{"users[1].id: duplicate id " + u1 + " (also users[0].id)"}},
		{"duplicate id across kinds", "users:\n" + user(u1, "a") + ws("a", u1, "http://x", ""),
			[]string{"workspaces[0].agents[0].id: duplicate id " + u1 + " (also users[0].id)"}},
		{"duplicate username", "users:\n" + user(u1, "a") + user(u2, "A"),
			[]string{`users[1].username: duplicate username "A" (also users[0])`}},
		{"bad id", "users:\n" + user("nope", "a"),
			[]string{`users[0].id: "nope" is not a UUID`}},
		{"unknown owner", "users:\n" + user(u1, "a") + ws("zed", a1, "http://x", ""),
			[]string{`workspaces[0].owner: unknown user "zed"`}},
		{"owner by id", "users:\n" + user(u1, "a") + ws(u1, a1, "http://x", ""), nil},
		{"bad url scheme", "users:\n" + user(u1, "a") + ws("a", a1, "ftp://x", ""),
			[]string{`workspaces[0].agents[0].apps[0].url: bad url "ftp://x": scheme must be http or https`}},
		{"bad url parse", "users:\n" + user(u1, "a") + ws("a", a1, "http://x:badport", ""),
			[]string{`workspaces[0].agents[0].apps[0].url: bad url "http://x:badport"`}},
		{"bad url host", "users:\n" + user(u1, "a") + ws("a", a1, "http:///x", ""),
			[]string{`workspaces[0].agents[0].apps[0].url: bad url "http:///x": no host`}},
		{"bad name", "users:\n" + user(u1, "a--b"),
			[]string{`users[0].username: "a--b" must be letters, digits and single hyphens`}},
		{"bad port share", "users:\n" + user(u1, "a") + ws("a", a1, "http://x", "    port_shares:\n      - {agent: other, port: 70000, share_level: everyone}\n"),
			[]string{
				`workspaces[0].port_shares[0].agent: no agent "other" in the workspace`,
				`workspaces[0].port_shares[0].port: 70000 is not a port (1-65535)`,
				`workspaces[0].port_shares[0].share_level: "everyone" is not one of owner, authenticated, organization, public`,
			}},
		{"bad sharing level", strings.Replace("users:\n"+user(u1, "a")+ws("a", a1, "http://x", ""), `url: "http://x"}`, `url: "http://x", sharing_level: world, cors_behavior: open}`, 1),
			[]string{
				`workspaces[0].agents[0].apps[0].sharing_level: "world" is not one of owner, authenticated, organization, public`,
				`workspaces[0].agents[0].apps[0].cors_behavior: "open" is not one of simple, passthru`,
			}},
		{"bad agent token", strings.Replace("users:\n"+user(u1, "a")+ws("a", a1, "http://x", ""), tok, "secret", 1),
			[]string{`workspaces[0].agents[0].auth_token: must be a UUID`}},
		{"no agents", "users:\n" + user(u1, "a") + "workspaces:\n  - {id: " + w1 + ", owner: a, name: dev}\n",
			[]string{"workspaces[0].agents: a workspace needs at least one agent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCatalog([]byte(tc.yaml))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidCatalog) {
				t.Fatalf("error %v, want ErrInvalidCatalog", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestNewRefusesInvalidCatalog(t *testing.T) {
	c := testCatalog(t, func(c *Catalog) { c.Workspaces[0].Owner = "nobody" })
	_, err := New(Options{Catalog: c, AccessURL: mustURL(t, "http://127.0.0.1:1")})
	if !errors.Is(err, ErrInvalidCatalog) {
		t.Fatalf("New: %v", err)
	}
}
