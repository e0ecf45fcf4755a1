package stack_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wsedge/wsedge/internal/testutil"
)

// logMethods are the slog.Logger methods whose arguments are key-value
// pairs (and slog's attribute constructors, whose first argument is a key).
var logMethods = map[string]bool{
	"Debug": true, "Info": true, "Warn": true, "Error": true,
	"DebugContext": true, "InfoContext": true, "WarnContext": true, "ErrorContext": true,
	"Log": true, "With": true,
}

var attrFuncs = map[string]bool{"Any": true, "String": true, "Attr": true, "Group": true}

// TestOneLogKeyForErrors: every log line of the module carries its error
// under the key "error", so one query finds them all. A repository rule,
// kept beside the layering test; it reads source, not types, so it looks
// at calls of log methods and slog attribute constructors with a literal
// "err" argument.
func TestOneLogKeyForErrors(t *testing.T) {
	root := testutil.RepoRoot(t)
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			args := call.Args
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "slog" && attrFuncs[sel.Sel.Name] {
				args = args[:min(1, len(args))]
			} else if !logMethods[sel.Sel.Name] {
				return true
			}
			for _, a := range args {
				if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, _ := strconv.Unquote(lit.Value); s == "err" {
						rel, _ := filepath.Rel(root, fset.Position(lit.Pos()).Filename)
						t.Errorf("%s:%d: log key \"err\"; use \"error\"", rel, fset.Position(lit.Pos()).Line)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("read only %d Go files under %s", files, root)
	}
}
