package tokens

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// BenchmarkVerifyTokenBaseline is the floor under BenchmarkVerifyToken:
// a bare HMAC-SHA512 over the same token's signing input with the same
// key and a constant-time compare with its signature, no JOSE parsing,
// no claims.
func BenchmarkVerifyTokenBaseline(b *testing.B) {
	s, err := SignToken(fuzzAppKey, sampleToken())
	if err != nil {
		b.Fatal(err)
	}
	i := strings.LastIndexByte(s, '.')
	input := []byte(s[:i])
	sig, err := base64.RawURLEncoding.DecodeString(s[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m := hmac.New(sha512.New, fuzzAppKey.Secret)
		m.Write(input)
		if !hmac.Equal(m.Sum(nil), sig) {
			b.Fatal("signature mismatch")
		}
	}
}

// BenchmarkDecryptAPIKeyBaseline is the floor under
// BenchmarkDecryptAPIKey: the two AES-256-GCM opens of the same JWE
// (unwrapping the content key with the api-key secret, A256GCMKW, then the
// content, A256GCM), on parts decoded beforehand; no parsing, no
// inflating, no claims.
func BenchmarkDecryptAPIKeyBaseline(b *testing.B) {
	s, err := EncryptAPIKey(fuzzAPIKey, "abcdefghij-0123456789abcdefghijkl", now)
	if err != nil {
		b.Fatal(err)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 5 {
		b.Fatalf("%d JWE parts", len(parts))
	}
	dec := func(p string) []byte {
		v, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	var hdr struct{ IV, Tag string }
	if err := json.Unmarshal(dec(parts[0]), &hdr); err != nil {
		b.Fatal(err)
	}
	aad := []byte(parts[0])
	wrapped := append(dec(parts[1]), dec(hdr.Tag)...)
	kwIV, iv := dec(hdr.IV), dec(parts[2])
	sealed := append(dec(parts[3]), dec(parts[4])...)
	open := func() []byte {
		kw, err := aes.NewCipher(fuzzAPIKey.Secret)
		if err != nil {
			b.Fatal(err)
		}
		kwGCM, err := cipher.NewGCM(kw)
		if err != nil {
			b.Fatal(err)
		}
		cek, err := kwGCM.Open(nil, kwIV, wrapped, nil)
		if err != nil {
			b.Fatal(err)
		}
		c, err := aes.NewCipher(cek)
		if err != nil {
			b.Fatal(err)
		}
		gcm, err := cipher.NewGCM(c)
		if err != nil {
			b.Fatal(err)
		}
		pt, err := gcm.Open(nil, iv, sealed, aad)
		if err != nil {
			b.Fatal(err)
		}
		return pt
	}
	// The baseline decrypts what DecryptAPIKey decrypts.
	plain, err := io.ReadAll(flate.NewReader(bytes.NewReader(open())))
	if err != nil || !bytes.Contains(plain, []byte("abcdefghij-0123456789abcdefghijkl")) {
		b.Fatalf("baseline decrypted %q, %v", plain, err)
	}
	if got, err := verifier(fuzzAPIKey).DecryptAPIKey(context.Background(), s); err != nil || got != "abcdefghij-0123456789abcdefghijkl" {
		b.Fatalf("DecryptAPIKey: %q, %v", got, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		open()
	}
}
