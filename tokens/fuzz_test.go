package tokens

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fuzzKeys are fixed so that seeds made with them verify.
var (
	fuzzAppKey, _ = ParseKey(FeatureAppToken, strings.Repeat("0a", 64), 7, now.Add(-time.Hour), time.Time{})
	fuzzAPIKey, _ = ParseKey(FeatureAPIKey, strings.Repeat("0b", 32), 3, now.Add(-time.Hour), time.Time{})
)

func FuzzVerifyToken(f *testing.F) {
	good, _ := SignToken(fuzzAppKey, sampleToken())
	f.Add(good)
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIiwia2lkIjoiNyJ9.e30.")
	f.Add("")
	v := verifier(fuzzAppKey)
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := v.VerifyToken(context.Background(), s)
		if err != nil {
			return
		}
		// Whatever verifies re-signs and verifies to the same token.
		again, err := SignToken(fuzzAppKey, tok)
		if err != nil {
			t.Fatal(err)
		}
		tok2, err := v.VerifyToken(context.Background(), again)
		if err != nil || tok2.Request != tok.Request || tok2.UserID != tok.UserID || !tok2.Expiry.Equal(tok.Expiry) {
			t.Fatalf("re-sign round trip: %+v %v", tok2, err)
		}
	})
}

func FuzzDecryptAPIKey(f *testing.F) {
	good, _ := EncryptAPIKey(fuzzAPIKey, "abcdefghij-0123456789abcdefghijkl", now)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add("a.b.c.d.e")
	v := verifier(fuzzAPIKey)
	f.Fuzz(func(t *testing.T, s string) {
		key, err := v.DecryptAPIKey(context.Background(), s)
		if err == nil && key == "" {
			t.Fatal("decrypted an empty key without error")
		}
	})
}

func FuzzStripCoderCookies(f *testing.F) {
	f.Add("a=1; coder_session_token=x; b=2")
	f.Add("coder_subdomain_app_session_token_abc=1;;x=\"y;z\"")
	f.Add("")
	f.Add(" a=1 ;b=2;")
	f.Add("a=1; b=2")
	f.Fuzz(func(t *testing.T, header string) {
		out := StripCoderCookies(header)
		if want := stripCoderCookiesSplitting(header); out != want {
			t.Fatalf("StripCoderCookies(%q) = %q, the splitting form gives %q", header, out, want)
		}
		// Idempotent, and no Coder cookie survives.
		if StripCoderCookies(out) != out {
			t.Fatalf("not idempotent: %q → %q", header, out)
		}
		r := http.Request{Header: http.Header{"Cookie": {out}}}
		var kept []string
		for _, c := range r.Cookies() {
			if IsCoderCookie(c.Name) {
				t.Fatalf("%q survived in %q", c.Name, out)
			}
			kept = append(kept, c.Name+"="+c.Value)
		}
		// Every other cookie a server would have read survives, in order,
		// with its value intact. (net/http reads no cookie at all from a
		// header of more than 3000 ";"-separated parts; stripping drops
		// empty parts, so such inputs are no oracle.)
		if strings.Count(header, ";") >= 3000 {
			return
		}
		in := http.Request{Header: http.Header{"Cookie": {header}}}
		var want []string
		for _, c := range in.Cookies() {
			if !IsCoderCookie(c.Name) {
				want = append(want, c.Name+"="+c.Value)
			}
		}
		if strings.Join(kept, "\n") != strings.Join(want, "\n") {
			t.Fatalf("other cookies changed: %q → %q (%q, want %q)", header, out, kept, want)
		}
	})
}

// stripCoderCookiesSplitting is StripCoderCookies written plainly, as it
// was before it learnt to return a prefix of its input.
func stripCoderCookiesSplitting(header string) string {
	var kept []string
	for _, part := range strings.Split(header, ";") {
		p := strings.Trim(part, asciiSpace)
		if p == "" {
			continue
		}
		name, _, _ := strings.Cut(p, "=")
		if IsCoderCookie(strings.Trim(name, asciiSpace)) {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "; ")
}
