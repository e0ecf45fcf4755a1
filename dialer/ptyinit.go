package dialer

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/coderhttp"
)

// ReconnectingPTYPort is the agent port of the reconnecting-PTY server.
const ReconnectingPTYPort = 2

// ErrInitFrameTooLong: the init frame's JSON must fit a 16-bit length.
var ErrInitFrameTooLong = errors.New("reconnecting-pty init frame longer than 65535 bytes")

// PTYInit is the first message on a reconnecting-PTY connection. The JSON
// keys are the Go field names (Coder's struct has no json tags).
type PTYInit struct {
	ID            uuid.UUID
	Height        uint16
	Width         uint16
	Command       string
	Container     string
	ContainerUser string
	BackendType   string
}

// AppendFrame appends the init frame — a little-endian uint16 length and
// that many bytes of JSON — to dst.
func (p PTYInit) AppendFrame(dst []byte) ([]byte, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return dst, fmt.Errorf("encode pty init: %w", err)
	}
	if len(body) > 0xffff {
		return dst, fmt.Errorf("encode pty init: %w: %d bytes", ErrInitFrameTooLong, len(body))
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(body)))
	return append(dst, body...), nil
}

// ptyQueryError is the 400 answer to bad terminal query parameters.
type ptyQueryError struct {
	Validations []coderhttp.ValidationError
}

func (e *ptyQueryError) Error() string {
	if len(e.Validations) == 0 {
		return "invalid query parameters"
	}
	return "invalid query parameters: " + e.Validations[0].Detail
}

// defaultPTYSize is Coder's default terminal height and width.
const defaultPTYSize = 80

// ParsePTYQuery reads the web terminal's query parameters with coderd's
// rules: reconnect is a required, non-empty UUID; height and width are
// unsigned integers defaulting to 80 (truncated to 16 bits, as coderd
// does); command, container, container_user and backend_type are free
// text. All problems are reported at once.
func ParsePTYQuery(q url.Values) (PTYInit, error) {
	var errs []coderhttp.ValidationError
	init := PTYInit{
		Height:        defaultPTYSize,
		Width:         defaultPTYSize,
		Command:       q.Get("command"),
		Container:     q.Get("container"),
		ContainerUser: q.Get("container_user"),
		BackendType:   q.Get("backend_type"),
	}
	switch {
	case !q.Has("reconnect"):
		errs = append(errs, coderhttp.ValidationError{Field: "reconnect", Detail: `Query param "reconnect" is required`})
	case q.Get("reconnect") == "":
		errs = append(errs, coderhttp.ValidationError{Field: "reconnect", Detail: `Query param "reconnect" is required and cannot be empty`})
	default:
		id, err := uuid.Parse(q.Get("reconnect"))
		if err != nil {
			errs = append(errs, coderhttp.ValidationError{Field: "reconnect", Detail: `Query param "reconnect" must be a valid uuid`})
		}
		init.ID = id
	}
	for _, f := range []struct {
		name string
		dst  *uint16
	}{{"height", &init.Height}, {"width", &init.Width}} {
		v := q.Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			errs = append(errs, coderhttp.ValidationError{
				Field:  f.name,
				Detail: fmt.Sprintf("Query param %q must be a valid positive integer (%s)", f.name, err.Error()),
			})
			continue
		}
		*f.dst = uint16(n) //nolint:gosec // coderd truncates the same way
	}
	if len(errs) > 0 {
		return PTYInit{}, &ptyQueryError{Validations: errs}
	}
	return init, nil
}
