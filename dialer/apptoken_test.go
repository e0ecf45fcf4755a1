package dialer

import (
	"net/http"
	"net/url"
	"testing"

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
