package coderhttp

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// JSONContentType is the Content-Type of every JSON answer.
const JSONContentType = "application/json; charset=utf-8"

// Response is coderd's JSON body for errors and messages.
type Response struct {
	Message     string            `json:"message"`
	Detail      string            `json:"detail,omitempty"`
	Validations []ValidationError `json:"validations,omitempty"`
}

// ValidationError is one entry of Response.Validations: which field of the
// request is wrong, and why.
type ValidationError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// EncodeJSON encodes v the way coderd writes JSON: HTML characters escaped,
// one trailing newline.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteJSON answers with status and v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := EncodeJSON(v)
	if err != nil {
		http.Error(w, "internal error encoding response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", JSONContentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
