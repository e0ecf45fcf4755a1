package dialer

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestPTYQueryDefaultsAndTruncation(t *testing.T) {
	id := uuid.New()
	got, err := ParsePTYQuery(url.Values{"reconnect": {id.String()}, "height": {""}, "width": {"65537"}})
	if err != nil {
		t.Fatal(err)
	}
	// Empty means default; coderd truncates oversize values to 16 bits.
	if got.ID != id || got.Height != 80 || got.Width != 1 {
		t.Fatalf("%+v", got)
	}
}

func TestPTYInitTooLong(t *testing.T) {
	_, err := PTYInit{Command: strings.Repeat("a", 70000)}.AppendFrame(nil)
	if !errors.Is(err, ErrInitFrameTooLong) {
		t.Fatalf("err %v", err)
	}
}

func FuzzPTYQuery(f *testing.F) {
	for _, s := range []string{
		"reconnect=9f3e4567-e89b-12d3-a456-426614174999&height=24&width=80&command=bash",
		"reconnect=&height=-1",
		"reconnect=x&width=99999999999999999999",
		"reconnect=9f3e4567-e89b-12d3-a456-426614174999&command=%00%ff%22&container=c&container_user=u&backend_type=screen",
		"height=1&height=2",
		"%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		init, err := ParsePTYQuery(q)
		if err != nil {
			var qe *ptyQueryError
			if !errors.As(err, &qe) || len(qe.Validations) == 0 {
				t.Fatalf("untyped or empty error %v", err)
			}
			return
		}
		frame, err := init.AppendFrame(nil)
		if err != nil {
			if !errors.Is(err, ErrInitFrameTooLong) {
				t.Fatalf("encode: %v", err)
			}
			return
		}
		n := int(binary.LittleEndian.Uint16(frame))
		if n != len(frame)-2 {
			t.Fatalf("length %d, body %d", n, len(frame)-2)
		}
		var back PTYInit
		if err := json.Unmarshal(frame[2:], &back); err != nil {
			t.Fatalf("decode: %v", err)
		}
		// JSON replaces invalid UTF-8; compare only what survives it.
		if back.ID != init.ID || back.Height != init.Height || back.Width != init.Width {
			t.Fatalf("round trip %+v != %+v", back, init)
		}
		var keys map[string]json.RawMessage
		_ = json.Unmarshal(frame[2:], &keys)
		for _, k := range []string{"ID", "Height", "Width", "Command", "Container", "ContainerUser", "BackendType"} {
			if _, ok := keys[k]; !ok {
				t.Fatalf("key %s missing", k)
			}
		}
	})
}
