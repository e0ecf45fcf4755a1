package primary

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeError: any status, content type and body give an *Error with
// that status and a message, never a panic; coderd's shape is read
// exactly; non-JSON bodies are cut as coderd's SDK cuts them.
func FuzzDecodeError(f *testing.F) {
	f.Add(401, "application/json", []byte(`{"message":"Missing required external proxy token"}`))
	f.Add(400, "application/json; charset=utf-8", []byte(`{"message":"Invalid feature: \"x\"","validations":[{"field":"feature","detail":"bad"}]}`))
	f.Add(502, "text/html", []byte("<html>bad gateway</html>"))
	f.Add(500, "", []byte{})
	f.Add(500, "application/json", []byte(`{"message":`))
	f.Add(500, "application/json", []byte(`[]`))
	f.Add(404, "APPLICATION/JSON", []byte(`{"message":null,"detail":7}`))
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		e := decodeError(status, contentType, body)
		if e == nil || e.StatusCode != status || e.Message == "" || e.InvalidBody {
			t.Fatalf("decodeError(%d, %q, %q) = %+v", status, contentType, body, e)
		}
		_ = e.Error()
		if mediaType(contentType) != "application/json" && len(e.Detail) > nonJSONDetailLimit+3 {
			t.Fatalf("non-JSON detail of %d bytes", len(e.Detail))
		}
		var shape struct {
			Message string `json:"message"`
		}
		if mediaType(contentType) == "application/json" && json.Unmarshal(body, &shape) == nil && shape.Message != "" && e.Message != shape.Message {
			t.Fatalf("message %q, body says %q", e.Message, shape.Message)
		}
		var keys cryptoKeysResponse
		if err := decodeSuccess(200, contentType, body, &keys); err != nil && !errors.Is(err, ErrInvalidResponse) {
			t.Fatalf("decodeSuccess error %v is not ErrInvalidResponse", err)
		}
	})
}
