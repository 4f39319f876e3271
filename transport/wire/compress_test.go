package wire

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

func TestCompressPage(t *testing.T) {
	p := &eventspb.SyncPage{LastUserSeq: 500}
	for i := range 500 {
		p.Entries = append(p.Entries, &eventspb.SyncEntry{UserSeq: uint64(i + 1), Type: "MessagePointer", Data: bytes.Repeat([]byte("hello "), 20)})
	}
	z, err := CompressPage(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(z) >= proto.Size(p)/4 {
		t.Fatalf("compressed %d bytes to %d", proto.Size(p), len(z))
	}
	back, err := DecompressPage(z, DefaultMaxFrameSize)
	if err != nil || !proto.Equal(back, p) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := DecompressPage(z, 1000); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("inflating past the limit: %v", err)
	}
	if _, err := DecompressPage([]byte("not zstd at all"), DefaultMaxFrameSize); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("garbage: %v", err)
	}
}
