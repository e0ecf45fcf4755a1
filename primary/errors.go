package primary

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Sentinel errors a caller can branch on with errors.Is.
var (
	// ErrUnavailable: the call did not get an answer (connection
	// failure, TLS failure, timeout, cancelled context). The underlying
	// error is wrapped too, so errors.Is(err, context.DeadlineExceeded)
	// also works.
	ErrUnavailable = errors.New("unavailable")
	// ErrResponseTooLarge: the answer exceeded Options.MaxBodyBytes.
	ErrResponseTooLarge = errors.New("response too large")
	// ErrInvalidResponse: the primary answered with the expected status
	// but a body that is not what coderd sends (bad JSON, HTML, missing
	// fields, invalid keys). Such errors are also *Error values.
	ErrInvalidResponse = errors.New("invalid response from primary")
)

// Error is an answer of the primary that is not the expected success:
// coderd's JSON error shape ({"message","detail","validations"}) with the
// HTTP status, or a description of a body that could not be read as one.
type Error struct {
	StatusCode int
	Method     string
	// URL is the request URL (the primary's, never carrying secrets).
	URL         string
	ContentType string
	Message     string            `json:"message"`
	Detail      string            `json:"detail,omitempty"`
	Validations []ValidationError `json:"validations,omitempty"`
	// InvalidBody marks a success status with an unusable body; such an
	// Error matches ErrInvalidResponse.
	InvalidBody bool

	cause error
}

// ValidationError is one field-scoped complaint in coderd's error shape.
type ValidationError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("primary: ")
	if e.Method != "" && e.URL != "" {
		fmt.Fprintf(&b, "%s %s: ", e.Method, e.URL)
	}
	if e.InvalidBody {
		fmt.Fprintf(&b, "invalid response (status %d): %s", e.StatusCode, e.Message)
	} else {
		fmt.Fprintf(&b, "status %d: %s", e.StatusCode, e.Message)
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, ": %s", e.Detail)
	}
	for _, v := range e.Validations {
		fmt.Fprintf(&b, "; %s: %s", v.Field, v.Detail)
	}
	return b.String()
}

// Unwrap exposes the cause (a JSON decode error, ErrResponseTooLarge).
func (e *Error) Unwrap() error { return e.cause }

// Is makes an InvalidBody error match ErrInvalidResponse.
func (e *Error) Is(target error) bool {
	return target == ErrInvalidResponse && e.InvalidBody
}

// IsStatus reports whether err is an *Error with the given status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && !e.InvalidBody && e.StatusCode == status
}

// Limits on how much of an error body ends up in an Error, as coderd's
// SDK truncates them (2 KiB of a non-JSON body, 1 KiB of a JSON body
// without a message).
const (
	nonJSONDetailLimit   = 2048
	noMessageDetailLimit = 1024
)

// mediaType is the lower-cased media type of a Content-Type value.
func mediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(contentType, ";")
	}
	return strings.ToLower(strings.TrimSpace(mt))
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// decodeError turns a non-success answer into an *Error the way coderd's
// SDK does: a JSON body is coderd's error shape; anything else is
// described as an unexpected content type with the start of the body.
func decodeError(status int, contentType string, body []byte) *Error {
	e := &Error{StatusCode: status, ContentType: contentType}
	if mediaType(contentType) != "application/json" {
		e.Message = fmt.Sprintf("unexpected non-JSON response %q", contentType)
		e.Detail = truncate(body, nonJSONDetailLimit)
		if len(body) == 0 {
			e.Detail = "no response body"
		}
		return e
	}
	if len(bytes.TrimSpace(body)) == 0 {
		e.Message = "empty response body"
		return e
	}
	var shape struct {
		Message     string            `json:"message"`
		Detail      string            `json:"detail"`
		Validations []ValidationError `json:"validations"`
	}
	if err := json.Unmarshal(body, &shape); err != nil {
		e.Message = "error response is not valid JSON"
		e.Detail = truncate(body, noMessageDetailLimit)
		e.cause = err
		return e
	}
	e.Message, e.Detail, e.Validations = shape.Message, shape.Detail, shape.Validations
	if e.Message == "" {
		e.Message = fmt.Sprintf("unexpected status code %d, response has no message", status)
		e.Detail = truncate(body, noMessageDetailLimit)
	}
	return e
}

// decodeSuccess decodes the body of a success answer into v. Like
// coderd's SDK it refuses HTML (a login portal or misconfigured URL in
// front of the primary) and accepts valid JSON whatever its label.
func decodeSuccess(status int, contentType string, body []byte, v any) error {
	invalid := func(msg string, cause error) *Error {
		return &Error{StatusCode: status, ContentType: contentType, Message: msg, InvalidBody: true, cause: cause}
	}
	mt := mediaType(contentType)
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), " \t\r\n")
	if mt == "text/html" || mt == "application/xhtml+xml" || (len(trimmed) > 0 && trimmed[0] == '<') {
		return invalid(fmt.Sprintf("received HTML (content type %q) instead of JSON; is the primary URL right?", contentType), nil)
	}
	if len(trimmed) == 0 {
		return invalid(fmt.Sprintf("empty response body (content type %q)", contentType), nil)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return invalid(fmt.Sprintf("body is not the expected JSON (content type %q): %v", contentType, err), err)
	}
	return nil
}

// statusText is used in logs.
func statusText(status int) string {
	return fmt.Sprintf("%d %s", status, http.StatusText(status))
}
