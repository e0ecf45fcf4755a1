package devagent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func frame(body string) []byte {
	return append(binary.LittleEndian.AppendUint16(nil, uint16(len(body))), body...)
}

func TestReadInitFrame(t *testing.T) {
	id := uuid.MustParse("123e4567-e89b-12d3-a456-426614174000")
	tests := []struct {
		name    string
		in      []byte
		want    InitFrame
		wantErr error
	}{
		{
			name: "good, as coderd writes it",
			in:   frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000","Height":40,"Width":120,"Command":"top","Container":"","ContainerUser":"","BackendType":""}`),
			want: InitFrame{ID: id, Height: 40, Width: 120, Command: "top"},
		},
		{
			name: "good, old agents' fields only",
			in:   frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000","Height":1,"Width":2,"Command":""}`),
			want: InitFrame{ID: id, Height: 1, Width: 2},
		},
		{
			name: "good, container and backend fields",
			in:   frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000","Container":"c1","ContainerUser":"root","BackendType":"screen"}`),
			want: InitFrame{ID: id, Container: "c1", ContainerUser: "root", BackendType: "screen"},
		},
		{name: "too long", in: binary.LittleEndian.AppendUint16(nil, MaxInitFrameLen+1), wantErr: ErrInitTooLong},
		{name: "max uint16 length", in: []byte{0xff, 0xff}, wantErr: ErrInitTooLong},
		{name: "bad JSON", in: frame(`{"ID":`), wantErr: ErrInitMalformed},
		{name: "JSON then garbage", in: frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000"}x`), wantErr: ErrInitMalformed},
		{name: "not an object", in: frame(`[1,2]`), wantErr: ErrInitMalformed},
		{name: "bad UUID", in: frame(`{"ID":"not-a-uuid"}`), wantErr: ErrInitMalformed},
		{name: "missing UUID", in: frame(`{"Height":10}`), wantErr: ErrInitMalformed},
		{name: "nil UUID is a valid key", in: frame(`{"ID":"00000000-0000-0000-0000-000000000000","Width":5}`), want: InitFrame{Width: 5}},
		{name: "unknown keys ignored", in: frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000","Future":true}`), want: InitFrame{ID: id}},
		{name: "empty ID", in: frame(`{"ID":""}`), wantErr: ErrInitMalformed},
		{name: "height out of range", in: frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000","Height":70000}`), wantErr: ErrInitMalformed},
		{name: "empty", in: nil, wantErr: ErrInitTruncated},
		{name: "one length byte", in: []byte{5}, wantErr: ErrInitTruncated},
		{name: "short body", in: append(binary.LittleEndian.AppendUint16(nil, 100), `{"ID":`...), wantErr: ErrInitTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadInitFrame(bytes.NewReader(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadInitFrameLeavesTheStream(t *testing.T) {
	in := append(frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000"}`), `{"data":"ls\r"}`...)
	r := bytes.NewReader(in)
	if _, err := ReadInitFrame(r); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != `{"data":"ls\r"}` {
		t.Fatalf("rest %q", rest)
	}
}

func TestAppendInitFrameWireForm(t *testing.T) {
	id := uuid.MustParse("123e4567-e89b-12d3-a456-426614174000")
	b, err := AppendInitFrame(nil, InitFrame{ID: id, Height: 24, Width: 80})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"ID":"123e4567-e89b-12d3-a456-426614174000","Height":24,"Width":80,"Command":"","Container":"","ContainerUser":"","BackendType":""}`
	if string(b) != string(frame(body)) {
		t.Fatalf("got %q\nwant %q", b, frame(body))
	}
	if _, err := AppendInitFrame(nil, InitFrame{ID: id, Command: strings.Repeat("x", MaxInitFrameLen)}); !errors.Is(err, ErrInitTooLong) {
		t.Fatalf("oversized: %v", err)
	}
}

func FuzzReadInitFrame(f *testing.F) {
	f.Add(frame(`{"ID":"123e4567-e89b-12d3-a456-426614174000","Height":40,"Width":120}`))
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := ReadInitFrame(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrInitTooLong) && !errors.Is(err, ErrInitMalformed) && !errors.Is(err, ErrInitTruncated) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// What we accept survives a round trip through the encoder.
		b, err := AppendInitFrame(nil, got)
		if err != nil {
			if errors.Is(err, ErrInitTooLong) {
				return // escaping can grow a frame past the limit
			}
			t.Fatal(err)
		}
		again, err := ReadInitFrame(bytes.NewReader(b))
		if err != nil || again != got {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, got)
		}
	})
}
