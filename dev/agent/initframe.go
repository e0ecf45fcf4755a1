package devagent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"
)

// MaxInitFrameLen bounds the JSON of a reconnecting-PTY init frame. The wire
// allows up to 65535 bytes (a uint16 length); real frames are a few hundred
// bytes, so anything beyond this is refused before it is read.
const MaxInitFrameLen = 16 << 10

// Errors returned by ReadInitFrame; callers branch on them with errors.Is.
var (
	ErrInitTooLong   = errors.New("init frame too long")
	ErrInitMalformed = errors.New("init frame malformed")
	ErrInitTruncated = errors.New("init frame truncated")
)

// Backend types a client may ask for. Coder's agent knows "auto" (screen if
// installed, else buffered), "screen" and "buffered"; this agent implements
// the buffered behaviour only, so "auto" means buffered here.
const (
	BackendTypeAuto     = "auto"
	BackendTypeBuffered = "buffered"
	BackendTypeScreen   = "screen"
)

// InitFrame is the first message on a reconnecting-PTY connection: a 2-byte
// little-endian length followed by that many bytes of JSON whose keys are the
// Go field names below (no json tags on Coder's side).
type InitFrame struct {
	ID            uuid.UUID
	Height        uint16
	Width         uint16
	Command       string
	Container     string
	ContainerUser string
	BackendType   string
}

// wireInit mirrors InitFrame with ID as text so a bad UUID gets its own error.
type wireInit struct {
	ID            string
	Height        uint16
	Width         uint16
	Command       string
	Container     string
	ContainerUser string
	BackendType   string
}

// ReadInitFrame reads one init frame from r. It never reads past the frame,
// so the stream that follows is left intact.
func ReadInitFrame(r io.Reader) (InitFrame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return InitFrame{}, fmt.Errorf("%w: length: %w", ErrInitTruncated, err)
	}
	n := int(binary.LittleEndian.Uint16(hdr[:]))
	if n > MaxInitFrameLen {
		return InitFrame{}, fmt.Errorf("%w: %d bytes, limit %d", ErrInitTooLong, n, MaxInitFrameLen)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return InitFrame{}, fmt.Errorf("%w: body: %w", ErrInitTruncated, err)
	}
	return ParseInitFrame(body)
}

// ParseInitFrame decodes and validates the JSON body of an init frame. ID
// must be a UUID; like Coder's agent, the nil UUID is accepted (it is just
// a session key). Unknown keys are ignored, and key case does not matter
// (encoding/json), as on Coder's side.
func ParseInitFrame(body []byte) (InitFrame, error) {
	var w wireInit
	if err := json.Unmarshal(body, &w); err != nil {
		return InitFrame{}, fmt.Errorf("%w: %w", ErrInitMalformed, err)
	}
	id, err := uuid.Parse(w.ID)
	if err != nil {
		return InitFrame{}, fmt.Errorf("%w: ID: %w", ErrInitMalformed, err)
	}
	return InitFrame{
		ID:            id,
		Height:        w.Height,
		Width:         w.Width,
		Command:       w.Command,
		Container:     w.Container,
		ContainerUser: w.ContainerUser,
		BackendType:   w.BackendType,
	}, nil
}

// AppendInitFrame appends f in wire form to dst, as a proxy writes it.
func AppendInitFrame(dst []byte, f InitFrame) ([]byte, error) {
	body, err := json.Marshal(wireInit{
		ID:            f.ID.String(),
		Height:        f.Height,
		Width:         f.Width,
		Command:       f.Command,
		Container:     f.Container,
		ContainerUser: f.ContainerUser,
		BackendType:   f.BackendType,
	})
	if err != nil {
		return nil, fmt.Errorf("devagent: encode init frame: %w", err)
	}
	if len(body) > MaxInitFrameLen {
		return nil, fmt.Errorf("devagent: %w: %d bytes", ErrInitTooLong, len(body))
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(body)))
	return append(dst, body...), nil
}
