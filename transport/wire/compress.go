package wire

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

// CompressMin is the encoded size from which a sync page is worth
// compressing.
const CompressMin = 1 << 10

var (
	encOnce sync.Once
	enc     *zstd.Encoder
	decOnce sync.Once
	dec     *zstd.Decoder
)

// CompressPage encodes a sync page as a zstd frame.
func CompressPage(p *eventspb.SyncPage) ([]byte, error) {
	raw, err := proto.Marshal(p)
	if err != nil {
		return nil, err
	}
	encOnce.Do(func() {
		enc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	})
	return enc.EncodeAll(raw, nil), nil
}

// DecompressPage decodes what CompressPage made, refusing to inflate past
// max bytes (a page is bounded like a frame).
func DecompressPage(b []byte, max int) (*eventspb.SyncPage, error) {
	decOnce.Do(func() {
		dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
	})
	raw, err := dec.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: sync page: %v", ErrBadFrame, err)
	}
	if len(raw) > max {
		return nil, fmt.Errorf("%w: sync page inflates to %d bytes, limit %d", ErrFrameTooLarge, len(raw), max)
	}
	var p eventspb.SyncPage
	if err := proto.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("%w: sync page: %v", ErrBadFrame, err)
	}
	return &p, nil
}
