package docs

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = ".."

// Spelled in pieces so that this file does not trip its own checks.
var (
	outsideLink  = "../" + "shared"
	section      = "\u00a7"
	foreignDocs  = []string{"ARCHITECTURE" + ".md", "coder-proxy-" + "protocol.md"}
	rfcSection   = regexp.MustCompile(`RFC ?\d+(bis)?,? ` + section + ` ?\d+(\.\d+)*`)
	docsPointer  = regexp.MustCompile(`docs/([A-Za-z0-9_-]+\.md)#([A-Za-z0-9_-]+)`)
	markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingLine  = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
)

// trackedFiles lists the repository's files as git tracks them, or, without
// git, every file outside hidden and git-ignored build directories.
func trackedFiles(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("git", "-C", repoRoot, "ls-files", "-z").Output()
	if err == nil {
		var files []string
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
		if len(files) > 0 {
			return files
		}
	}
	var files []string
	err = filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != repoRoot && (strings.HasPrefix(name, ".") || name == "bin" || name == "artifacts") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(repoRoot, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatalf("list the repository's files: %v", err)
	}
	return files
}

// slug is the anchor GitHub gives a heading: lower case, punctuation
// dropped (letters, digits, '-' and '_' kept), spaces turned into '-'.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors are the heading anchors of a markdown text, outside code
// fences, with GitHub's -1, -2 suffixes for repeated headings.
func anchors(markdown string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(markdown, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		m := headingLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		// Inline code and links keep their text, lose their markup.
		text := strings.NewReplacer("`", "", "*", "").Replace(m[1])
		s := slug(text)
		if n := seen[s]; n > 0 {
			out[s+"-"+itoa(n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

// pointerProblems reports what is wrong with one file's text: links out of
// the repository, section-number citations of a document the repository
// does not hold, and docs/*.md#anchor pointers whose page or heading does
// not exist (docAnchors: page name → its anchors).
func pointerProblems(text string, docAnchors map[string]map[string]bool) []string {
	var probs []string
	for i, line := range strings.Split(text, "\n") {
		at := func(format string) string { return "line " + itoa(i+1) + ": " + format }
		if strings.Contains(line, outsideLink) {
			probs = append(probs, at("links outside the repository ("+outsideLink+")"))
		}
		for _, d := range foreignDocs {
			if strings.Contains(line, d) {
				probs = append(probs, at("points at "+d+", which is not in the repository; point at docs/*.md"))
			}
		}
		if strings.Contains(rfcSection.ReplaceAllString(line, ""), section) {
			probs = append(probs, at("cites a section number ("+section+"); point at a docs/protocol.md or docs/architecture.md heading instead"))
		}
		for _, m := range docsPointer.FindAllStringSubmatch(line, -1) {
			page, anchor := m[1], m[2]
			as, ok := docAnchors[page]
			switch {
			case !ok:
				probs = append(probs, at("points at docs/"+page+", which does not exist"))
			case !as[anchor]:
				probs = append(probs, at("points at docs/"+page+"#"+anchor+", a heading that does not exist"))
			}
		}
	}
	return probs
}

// linkProblems checks the relative links of a markdown file at relPath:
// the target exists inside the repository and, for a markdown target with
// a fragment, has that heading. read returns a repository file's text.
func linkProblems(relPath, text string, read func(string) (string, bool)) []string {
	var probs []string
	for _, m := range markdownLink.FindAllStringSubmatch(text, -1) {
		link := m[1]
		if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
			continue
		}
		target, frag, _ := strings.Cut(link, "#")
		file := relPath
		if target != "" {
			file = path.Clean(path.Join(path.Dir(relPath), target))
			if file == ".." || strings.HasPrefix(file, "../") {
				probs = append(probs, "link "+link+" leaves the repository")
				continue
			}
		}
		body, ok := read(file)
		if !ok {
			probs = append(probs, "link "+link+": "+file+" does not exist")
			continue
		}
		if frag != "" && strings.HasSuffix(file, ".md") && !anchors(body)[frag] {
			probs = append(probs, "link "+link+": "+file+" has no heading #"+frag)
		}
	}
	return probs
}

func readRepoFile(rel string) (string, bool) {
	p := filepath.Join(repoRoot, filepath.FromSlash(rel))
	st, err := os.Stat(p)
	if err != nil {
		return "", false
	}
	if st.IsDir() {
		return "", true
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false
	}
	return string(b), true
}

func docPages(t *testing.T) map[string]map[string]bool {
	t.Helper()
	pages, err := filepath.Glob("*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs/*.md pages found (%v)", err)
	}
	out := map[string]map[string]bool{}
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = anchors(string(b))
	}
	return out
}

// TestPointersStayInTheRepository fails when a tracked file links outside
// the repository, cites a section number of a document the repository does
// not hold, or points at a docs page heading that does not exist.
func TestPointersStayInTheRepository(t *testing.T) {
	pages := docPages(t)
	files := trackedFiles(t)
	if len(files) < 50 {
		t.Fatalf("found only %d files; is the repository root %s?", len(files), repoRoot)
	}
	checked := 0
	for _, f := range files {
		if f == "docs/docs_test.go" {
			continue // its own cases name bad pointers on purpose
		}
		if strings.HasPrefix(f, "dev/primary/static/xterm/") && !strings.HasSuffix(f, ".md") {
			continue // xterm.js, vendored byte for byte: its text, not ours
		}
		text, ok := readRepoFile(f)
		if !ok || bytes.IndexByte([]byte(text), 0) >= 0 {
			continue // deleted in the work tree, or binary
		}
		checked++
		for _, p := range pointerProblems(text, pages) {
			t.Errorf("%s: %s", f, p)
		}
		if strings.HasSuffix(f, ".md") {
			for _, p := range linkProblems(f, text, readRepoFile) {
				t.Errorf("%s: %s", f, p)
			}
		}
	}
	t.Logf("checked %d files against %d docs pages", checked, len(pages))
}

// TestDocsAreThere guards the pointers the code relies on most: the pages
// exist with the headings code comments name.
func TestDocsAreThere(t *testing.T) {
	pages := docPages(t)
	for page, want := range map[string][]string{
		"architecture.md": {"components", "package-map", "where-is-what", "the-edge-contract", "request-walks", "rules-that-hold-everywhere", "metrics-and-logs"},
		"protocol.md":     {"proxy-api", "signed-app-token", "smuggled-api-key", "cookies", "coordination", "open-questions-and-findings"},
	} {
		for _, a := range want {
			if !pages[page][a] {
				t.Errorf("docs/%s has no heading #%s", page, a)
			}
		}
	}
}

// TestCheckerCatches feeds the checks the kinds of pointer they exist to
// refuse, and some they must let through.
func TestCheckerCatches(t *testing.T) {
	pages := map[string]map[string]bool{"protocol.md": {"cookies": true}}
	for _, tc := range []struct {
		text string
		bad  bool
	}{
		{"// Names of Coder's cookies (protocol " + section + "4.3).", true},
		{"// see the protocol reference " + section + "10.4", true},
		{"// the agent's address (" + section + "10.4).", true},
		{"see [ref](" + outsideLink + "/reference/x.md)", true},
		{"// Rules (see " + foreignDocs[0] + "):", true},
		{"// docs/protocol.md#no-such-heading", true},
		{"// docs/nosuchpage.md#cookies", true},
		{"// docs/protocol.md#cookies", false},
		{"// a cookie line (RFC 6265 " + section + "5.2).", false},
		{"// a cookie line (RFC 6265bis " + section + "5.6).", false},
		{"plain text", false},
	} {
		got := len(pointerProblems(tc.text, pages)) > 0
		if got != tc.bad {
			t.Errorf("%q: flagged %v, want %v (%v)", tc.text, got, tc.bad, pointerProblems(tc.text, pages))
		}
	}

	files := map[string]string{
		"README.md":      "[a](docs/p.md#x) [b](#top)\n# Top\n",
		"docs/p.md":      "# X\n",
		"deploy/x.yaml":  "",
		"docs/other.md":  "[up](../README.md) [out](../../elsewhere/a.md) [gone](missing.md) [bad](p.md#y)",
		"docs/fenced.md": "```\n# not a heading\n```\n[self](#not-a-heading)",
	}
	read := func(p string) (string, bool) { s, ok := files[p]; return s, ok }
	if p := linkProblems("README.md", files["README.md"], read); len(p) != 0 {
		t.Errorf("README.md: unexpected problems %v", p)
	}
	if p := linkProblems("docs/other.md", files["docs/other.md"], read); len(p) != 3 {
		t.Errorf("docs/other.md: got %d problems %v, want 3 (out of the repository, missing file, missing heading)", len(p), p)
	}
	if p := linkProblems("docs/fenced.md", files["docs/fenced.md"], read); len(p) != 1 {
		t.Errorf("a heading inside a code fence must not count: %v", p)
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Signed app token":               "signed-app-token",
		"Where is what":                  "where-is-what",
		"Subdomain app, first visit":     "subdomain-app-first-visit",
		"The dialer trusts only what it": "the-dialer-trusts-only-what-it",
		"ext_proc phases (x-wsedge-…)":   "ext_proc-phases-x-wsedge-",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}
