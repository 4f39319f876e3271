package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// DefaultMaxFrameSize bounds one frame (its protobuf bytes) unless the
// server says otherwise in Welcome.max_frame_size.
const DefaultMaxFrameSize = 1 << 20

// Protocol error codes (Error.code). Codes 1..7 are the service's (see
// actors.Code); these are the protocol's own.
const (
	CodeBadFrame     = 100 // malformed, oversize or truncated frame
	CodeUnknown      = 101 // unknown request type
	CodeUnauthorized = 102 // missing, forged, expired or wrong-key token
	CodeRateLimited  = 103 // too many requests on this connection
	CodeTooMany      = 104 // too many connections for this user
	CodeShutdown     = 105 // the server is stopping
	CodeInternal     = 106
	CodeReplaced     = 107 // a newer connection of the same device took this one's place
)

var (
	// ErrFrameTooLarge: a frame announced more bytes than allowed.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrBadFrame: the bytes are not a frame of the expected message.
	ErrBadFrame = errors.New("wire: malformed frame")
)

// AppendFrame appends m as a frame (uvarint length, then the bytes).
func AppendFrame(dst []byte, m proto.Message) ([]byte, error) {
	size := proto.Size(m)
	dst = binary.AppendUvarint(dst, uint64(size))
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

// WriteFrame writes m as one frame in one Write call.
func WriteFrame(w io.Writer, m proto.Message) error {
	b, err := AppendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Reader reads frames from a stream, refusing any above its limit before
// reading (or allocating) its body.
type Reader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// NewReader reads frames of at most max bytes from r.
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	// A small buffer: idle connections hold one per stream; big frames
	// are read through it just the same.
	return &Reader{r: bufio.NewReaderSize(r, 512), max: max}
}

// length reads a frame's uvarint length. Errors of the stream itself come
// back as they are; only bytes that cannot be a length are ErrBadFrame.
func (r *Reader) length() (uint64, error) {
	var n uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if i == 0 {
					return 0, io.EOF
				}
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			break
		}
		n |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%w: length overflows 64 bits", ErrBadFrame)
}

// Read reads the next frame into m. io.EOF means the stream ended cleanly
// between frames; a stream that ends inside a frame gives
// io.ErrUnexpectedEOF; ErrFrameTooLarge and ErrBadFrame name bad input.
func (r *Reader) Read(m proto.Message) error {
	n, err := r.length()
	if err != nil {
		return err
	}
	if n > uint64(r.max) {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, r.max)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	if _, err := io.ReadFull(r.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return nil
}
