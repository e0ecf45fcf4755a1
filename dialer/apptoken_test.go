package dialer

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/wsedge/wsedge/edgewire"
	"github.com/wsedge/wsedge/tokens"
)

// TestQueryCarriesToken: the fast path refuses exactly the queries whose
// parsed parameters carry a key or token, however the name is spelt.
func TestQueryCarriesToken(t *testing.T) {
	key, tok := tokens.SmuggledAPIKeyQueryParam, tokens.SignedAppTokenQueryParam
	for _, raw := range []string{
		"", "a=b", "a=%20b", key + "=k", tok + "=t", "x=1&" + tok + "=t",
		key + "=", tok + "=&" + tok + "=t", "%63" + key[1:] + "=k", "%63" + tok[1:] + "=t",
		"%zz&" + tok + "=t", tok + ";=t", "a=1;" + tok + "=t", tok + "x=t", "q=" + tok,
	} {
		q, _ := url.ParseQuery(raw)
		want := q.Get(key) != "" || q.Get(tok) != ""
		if got := queryCarriesToken(raw); got != want {
			t.Errorf("queryCarriesToken(%q) = %v, want %v", raw, got, want)
		}
	}
}

// TestFirstTokenCookie: the first token cookie and the count, as
// net/http parses the Cookie headers.
func TestFirstTokenCookie(t *testing.T) {
	name := tokens.SignedAppTokenCookie
	for _, lines := range [][]string{
		nil, {"a=1"}, {name + "=t"}, {"a=1; " + name + "=t; b=2"}, {name + "=t1", name + "=t2"},
		{name + `="q"`}, {name + "=bad value"}, {name + "x=t"}, {" " + name + " = t "}, {"x=" + name},
	} {
		r := &http.Request{Header: http.Header{"Cookie": lines}}
		var want string
		var wantN int
		for _, c := range r.Cookies() {
			if c.Name == name {
				if wantN == 0 {
					want = c.Value
				}
				wantN++
			}
		}
		if got, n := firstTokenCookie(r); got != want || n != wantN {
			t.Errorf("firstTokenCookie(%q) = %q, %d; want %q, %d", lines, got, n, want, wantN)
		}
	}
}

// TestAppCookies: what an app gets of the Cookie lines is each line
// without Coder's cookies and the cold-path marker, empty lines dropped.
func TestAppCookies(t *testing.T) {
	marker := edgewire.ColdPathCookie + "=1"
	for _, tt := range []struct{ in, want []string }{
		{[]string{"a=1; b=2"}, []string{"a=1; b=2"}},
		{[]string{"a=1;b=2 "}, []string{"a=1; b=2"}},
		{[]string{""}, []string{}},
		{[]string{"a=1", "", "b=2"}, []string{"a=1", "b=2"}},
		{[]string{"a=1", "coder_session_token=x"}, []string{"a=1"}},
		{[]string{"coder_signed_app_token=t; theme=dark; " + marker, "x=1"}, []string{"theme=dark", "x=1"}},
		{[]string{marker}, []string{}},
		{[]string{"a=" + marker}, []string{"a=" + marker}},
	} {
		if got := appCookies(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("appCookies(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
