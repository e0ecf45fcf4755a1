package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// progress copies the lines of a `go test -json` stream that a person
// watching a long run wants to see (results, package verdicts, failures)
// to w, and drains r.
func progress(r io.Reader, w io.Writer) {
	bufs := map[string]*strings.Builder{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev testEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Action != "output" {
			continue
		}
		b := bufs[ev.Package]
		if b == nil {
			b = &strings.Builder{}
			bufs[ev.Package] = b
		}
		b.WriteString(ev.Output)
		s := b.String()
		for {
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				break
			}
			if l := s[:i]; worthShowing(l) {
				fmt.Fprintln(w, l)
			}
			s = s[i+1:]
		}
		b.Reset()
		b.WriteString(s)
	}
	_, _ = io.Copy(io.Discard, r)
}

func worthShowing(l string) bool {
	t := strings.TrimSpace(l)
	switch {
	case strings.HasPrefix(l, "Benchmark") && strings.Contains(l, "/op"),
		strings.HasPrefix(l, "ok "), strings.HasPrefix(l, "FAIL"),
		strings.HasPrefix(t, "--- FAIL"), strings.HasPrefix(t, "--- PASS: TestSoak"),
		strings.HasPrefix(l, "panic:"), strings.Contains(l, ": soak: "):
		return true
	}
	return false
}
