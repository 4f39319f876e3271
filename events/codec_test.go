package events

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestRecordRoundTrip(t *testing.T) {
	cases := []record{
		{id: uuid.New(), created: time.Now().UnixNano(), pos: 1, typ: "MessageSent", metadata: []byte("m"), data: []byte("d")},
		{id: uuid.New(), created: 0, pos: 1 << 62, typ: "T"},
		{id: uuid.New(), created: -5, pos: 7, typ: "Ü", data: bytes.Repeat([]byte{0}, 1000)},
	}
	for _, in := range cases {
		out, err := decodeRecord(in.appendTo(nil))
		if err != nil {
			t.Fatal(err)
		}
		if out.id != in.id || out.created != in.created || out.pos != in.pos || out.typ != in.typ ||
			!bytes.Equal(out.metadata, in.metadata) || !bytes.Equal(out.data, in.data) {
			t.Fatalf("round trip: %+v became %+v", in, out)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	in := header{next: 42, deleted: true, deletedBefore: 40, meta: StreamMetadata{MaxAge: time.Hour, MaxCount: 7, TruncateBefore: 3}}
	out, name, err := decodeHeader(in.encode("conv-x"))
	if err != nil || out != in || name != "conv-x" {
		t.Fatalf("round trip: %+v %q %v", out, name, err)
	}
	in = header{tombstoned: true}
	if out, _, err := decodeHeader(in.encode("s")); err != nil || out != in {
		t.Fatalf("round trip: %+v %v", out, err)
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder of stored data: damage
// must give ErrCorrupt, never a panic.
func FuzzDecode(f *testing.F) {
	f.Add((&record{id: uuid.New(), typ: "T", data: []byte("x")}).appendTo(nil))
	f.Add(header{next: 3}.encode("conv-1"))
	f.Add(logEntry{sid: 1, rev: 2}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, err := range []error{
			func() error { _, err := decodeRecord(b); return err }(),
			func() error { _, _, err := decodeHeader(b); return err }(),
			func() error { _, err := decodeLogEntry(b); return err }(),
			func() error { _, _, err := decodeGlobal(b); return err }(),
			func() error { _, _, err := decodeEventKey(b); return err }(),
		} {
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
		}
		if r, err := decodeRecord(b); err == nil {
			if again, err := decodeRecord(r.appendTo(nil)); err != nil || again.typ != r.typ || !bytes.Equal(again.data, r.data) {
				t.Fatalf("decoded record does not re-encode: %v", err)
			}
		}
	})
}
