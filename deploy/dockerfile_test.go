package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wsedge/wsedge/internal/testutil"
)

// dockerfile is the parts of deploy/Dockerfile the tests look at.
type dockerfile struct {
	Text       string
	User       string   // USER of the last stage
	Entrypoint []string // ENTRYPOINT of the last stage (exec form)
	Cmd        []string // CMD of the last stage (exec form)
	Expose     []string // EXPOSE of the last stage, as "9001/tcp"
	Builds     []string // packages the build stage compiles (go build … ./pkg)
	VersionVar string   // the -X variable set to ${VERSION}
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	return readContainerfile(t, "Dockerfile")
}

// readContainerfile reads the instructions the tests look at from a
// Dockerfile-syntax file under deploy/.
func readContainerfile(t *testing.T, name string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{Text: string(b)}
	// Join continuation lines so each instruction is one line.
	text := strings.ReplaceAll(d.Text, "\\\n", " ")
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			d.User, d.Entrypoint, d.Cmd, d.Expose = "", nil, nil, nil
		case strings.HasPrefix(line, "EXPOSE "):
			for _, p := range strings.Fields(strings.TrimPrefix(line, "EXPOSE ")) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				d.Expose = append(d.Expose, p)
			}
		case strings.HasPrefix(line, "CMD "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "CMD ")), &d.Cmd); err != nil {
				t.Errorf("%s: CMD is not in exec form: %v", name, err)
			}
		case strings.HasPrefix(line, "USER "):
			d.User = strings.TrimSpace(strings.TrimPrefix(line, "USER "))
		case strings.HasPrefix(line, "ENTRYPOINT "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "ENTRYPOINT ")), &d.Entrypoint); err != nil {
				t.Errorf("%s: ENTRYPOINT is not in exec form: %v", name, err)
			}
		}
	}
	for _, m := range regexp.MustCompile(`go build [^&;]*?(\./[\w/.-]+)`).FindAllStringSubmatch(text, -1) {
		d.Builds = append(d.Builds, m[1])
	}
	if m := regexp.MustCompile(`-X (\S+)=\$\{VERSION\}`).FindStringSubmatch(text); m != nil {
		d.VersionVar = m[1]
	}
	return d
}

// TestDockerfile checks what an image build depends on without a Docker
// engine: a numeric non-root user, the entrypoint, static trimmed builds of
// packages that exist, and a version variable that really sets the version.
func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	uid, _, _ := strings.Cut(d.User, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("final USER %q is not a numeric non-root uid", d.User)
	}
	if len(d.Entrypoint) != 1 || d.Entrypoint[0] != "/wsedge" {
		t.Errorf("ENTRYPOINT %q, want [\"/wsedge\"]", d.Entrypoint)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "FROM golang:", "gcr.io/distroless/static"} {
		if want == "FROM golang:" {
			if !regexp.MustCompile(`FROM (--platform=\S+ )?golang:\$\{GO_VERSION\}`).MatchString(d.Text) || !strings.Contains(d.Text, "ARG GO_VERSION=1.26") {
				t.Error("builder is not golang:1.26")
			}
			continue
		}
		if !strings.Contains(d.Text, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	if want := []string{"./cmd/wsedge", "./deploy/probe"}; strings.Join(d.Builds, " ") != strings.Join(want, " ") {
		t.Fatalf("Dockerfile builds %q, want %q", d.Builds, want)
	}
	if d.VersionVar == "" {
		t.Fatal("no -X …=${VERSION} in the Dockerfile")
	}

	// Link with the Dockerfile's -X and check the version is stamped (a -X
	// on a variable that does not exist is silently ignored). Only the link
	// differs from an ordinary build, so the compile cache serves the rest;
	// -trimpath and CGO_ENABLED=0 would recompile everything.
	root := testutil.RepoRoot(t)
	bin := filepath.Join(t.TempDir(), "wsedge")
	build := exec.Command("go", "build", "-ldflags", "-X "+d.VersionVar+"=v9.9.9-dockerfile-test", "-o", bin, "./cmd/wsedge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("wsedge v9.9.9-dockerfile-test ")) {
		t.Fatalf("wsedge version = %q (%v): %s does not set the version", out, err, d.VersionVar)
	}
}

// dockerignorePatterns reads deploy/Dockerfile.dockerignore.
func dockerignorePatterns(t *testing.T) []*regexp.Regexp {
	t.Helper()
	b, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var out []*regexp.Regexp
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf("dockerignore exception %q: teach dockerignoreMatch about it", line)
		}
		out = append(out, dockerignoreRegexp(line))
	}
	return out
}

// dockerignoreRegexp turns a .dockerignore pattern into a regexp over
// slash-separated paths relative to the context root: "*" and "?" stay
// within a path element, "**" spans any number of them, and a pattern that
// matches a directory matches everything under it.
func dockerignoreRegexp(p string) *regexp.Regexp {
	p = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p)), "/")
	var re strings.Builder
	re.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**/"):
			re.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			re.WriteString(".*")
			i++
		case c == '*':
			re.WriteString("[^/]*")
		case c == '?':
			re.WriteString("[^/]")
		default:
			re.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	re.WriteString("(/.*)?$")
	return regexp.MustCompile(re.String())
}

func TestDockerignoreRegexp(t *testing.T) {
	for _, tt := range []struct {
		pattern, path string
		want          bool
	}{
		{".git", ".git/HEAD", true},
		{"bin", "bin/wsedge", true},
		{"bin", "cmd/bin/x.go", false},
		{"**/*.test", "tokens.test", true},
		{"**/*.test", "a/b/c.test", true},
		{"deploy/compose/*.env", "deploy/compose/wsedge.env", true},
		{"deploy/compose/*.env", "deploy/compose/wsedge.env.example", false},
		{"deploy/kubernetes/**/*.env", "deploy/kubernetes/overlays/example/proxy-token.env", true},
		{"tmp", "internal/tmp.go", false},
	} {
		if got := dockerignoreRegexp(tt.pattern).MatchString(tt.path); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

// TestDockerignoreKeepsSources: no file the image's builds need (Go files,
// embedded files, go.mod/go.sum) is left out of the build context.
func TestDockerignoreKeepsSources(t *testing.T) {
	root := testutil.RepoRoot(t)
	patterns := dockerignorePatterns(t)
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`, "./cmd/wsedge", "./deploy/probe")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	files := []string{"go.mod", "go.sum"}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		rel, err := filepath.Rel(root, fields[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields[1:] {
			files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	if len(files) < 50 {
		t.Fatalf("only %d source files found", len(files))
	}
	for _, f := range files {
		for _, p := range patterns {
			if p.MatchString(f) {
				t.Errorf("%s is needed by the build but Dockerfile.dockerignore leaves it out (%s)", f, p)
			}
		}
	}
}

// buildTags splits a -tags value (comma- or space-separated) into a sorted
// set.
func buildTags(v string) []string {
	tags := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	slices.Sort(tags)
	return slices.Compact(tags)
}

// TestDockerfileBuildTagsMatchMakefile: the image's wsedge binary is built
// with exactly the Go build tags `make build` uses, so an image built with
// the documented command has the same features (the websocket DERP client
// only exists with ts_debug_websockets).
func TestDockerfileBuildTagsMatchMakefile(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GOTAGS\s*[:?]?=\s*(.*?)\s*$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no GOTAGS assignment in the Makefile")
	}
	makeTags := buildTags(string(m[1]))
	if len(makeTags) == 0 {
		t.Fatal("the Makefile's GOTAGS is empty")
	}

	d := readDockerfile(t)
	a := regexp.MustCompile(`(?m)^ARG GO_TAGS=(.*)$`).FindStringSubmatch(d.Text)
	if a == nil {
		t.Fatal("no ARG GO_TAGS=… default in the Dockerfile")
	}
	imageTags := buildTags(strings.Trim(strings.TrimSpace(a[1]), `"'`))
	if !slices.Equal(imageTags, makeTags) {
		t.Errorf("Dockerfile builds with tags %q, the Makefile with %q", imageTags, makeTags)
	}
	text := strings.ReplaceAll(d.Text, "\\\n", " ")
	if !regexp.MustCompile(`go build [^&;]*-tags "\$GO_TAGS"[^&;]*\./cmd/wsedge`).MatchString(text) {
		t.Error(`the Dockerfile's go build of ./cmd/wsedge does not pass -tags "$GO_TAGS"`)
	}
}
