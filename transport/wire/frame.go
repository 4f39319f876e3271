package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

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
	CodeBusy         = 108 // too many connections logging in (server-wide or from one network prefix): retry later
	CodeDisconnected = 109 // the app backend disconnected this device (server API)
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
// reading its body. It never allocates the announced length up front: the
// buffer grows (doubling from 4 KiB) as the bytes arrive, so a frame that
// is announced but never sent costs what was sent, not what was announced.
type Reader struct {
	r       *bufio.Reader
	src     io.Reader
	max     int
	buf     []byte // reused for small frames only
	budget  Budget
	timeout time.Duration
}

// Budget is shared by the readers of one connection: the bytes of frames
// being read count against it from the moment they are allocated until
// the frame is decoded (or refused).
type Budget interface {
	// Take reserves n bytes or refuses with an error (the frame is then
	// refused with that error, wrapped in ErrBudget).
	Take(n int) error
	// Give returns n bytes taken before.
	Give(n int)
}

// ErrBudget: reading the frame would exceed the connection's memory budget.
var ErrBudget = errors.New("wire: connection memory budget exhausted")

// ErrFrameStalled: a frame started but did not complete within the frame timeout.
var ErrFrameStalled = errors.New("wire: frame stalled")

const (
	firstChunk   = 4 << 10 // a frame's buffer starts at this size (or the frame's)
	keepBufBelow = 1 << 10 // buffers up to this size are reused between frames
)

// NewReader reads frames of at most max bytes from r.
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	// A small buffer: idle connections hold one per stream; big frames
	// are read through it just the same.
	return &Reader{r: bufio.NewReaderSize(r, 512), src: r, max: max}
}

// WithBudget makes the reader count the bytes of the frame it is reading
// against b.
func (r *Reader) WithBudget(b Budget) *Reader { r.budget = b; return r }

// WithFrameTimeout bounds the time from a frame's first byte to its last:
// when the stream can set read deadlines (QUIC streams, net.Conn), a frame
// that takes longer fails with ErrFrameStalled. Waiting between frames
// has no deadline.
func (r *Reader) WithFrameTimeout(d time.Duration) *Reader { r.timeout = d; return r }

type readDeadliner interface{ SetReadDeadline(time.Time) error }

// length reads a frame's uvarint length. Errors of the stream itself come
// back as they are; only bytes that cannot be a length are ErrBadFrame.
// started is called once the first byte is there.
func (r *Reader) length(started func()) (uint64, error) {
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
		if i == 0 {
			started()
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
// io.ErrUnexpectedEOF; ErrFrameTooLarge and ErrBadFrame name bad input,
// ErrBudget and ErrFrameStalled a frame refused to protect the server.
func (r *Reader) Read(m proto.Message) error {
	dl, _ := r.src.(readDeadliner)
	if r.timeout <= 0 {
		dl = nil
	}
	armed := false
	started := func() {
		if dl != nil {
			dl.SetReadDeadline(time.Now().Add(r.timeout))
			armed = true
		}
	}
	if dl != nil && r.r.Buffered() > 0 {
		started() // the frame's first bytes are already here
	}
	defer func() {
		if armed {
			dl.SetReadDeadline(time.Time{})
		}
	}()
	err := r.read(m, started)
	if err != nil && armed && isTimeout(err) {
		return fmt.Errorf("%w: not complete within %v", ErrFrameStalled, r.timeout)
	}
	return err
}

// RefusedID is the request id at the start of a frame that Read refused
// as too large, when its first bytes have arrived (0 otherwise): a
// Request's id is its first field, so the refusal can name the request.
// It only looks at bytes already buffered, never waits for more.
func (r *Reader) RefusedID() uint64 {
	b, _ := r.r.Peek(min(r.r.Buffered(), 1+binary.MaxVarintLen64))
	if len(b) < 2 || b[0] != 0x08 { // field 1, varint
		return 0
	}
	id, n := binary.Uvarint(b[1:])
	if n <= 0 {
		return 0
	}
	return id
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func (r *Reader) read(m proto.Message, started func()) error {
	n, err := r.length(started)
	if err != nil {
		return err
	}
	if n > uint64(r.max) {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, r.max)
	}
	size := int(n)
	b := r.buf[:0]
	if cap(b) < min(size, firstChunk) {
		b = make([]byte, 0, min(size, firstChunk))
	}
	taken := 0
	defer func() {
		if r.budget != nil && taken > 0 {
			r.budget.Give(taken)
		}
	}()
	take := func(c int) error {
		if r.budget == nil {
			return nil
		}
		if err := r.budget.Take(c - taken); err != nil {
			return fmt.Errorf("%w: %v", ErrBudget, err)
		}
		taken = c
		return nil
	}
	if err := take(cap(b)); err != nil {
		return err
	}
	for len(b) < size {
		if len(b) == cap(b) {
			c := min(size, 2*cap(b))
			if err := take(c); err != nil {
				return err
			}
			b = append(make([]byte, 0, c), b...)
		}
		k, err := r.r.Read(b[len(b):min(size, cap(b))])
		b = b[:len(b)+k]
		if err != nil && len(b) < size {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	if cap(b) <= keepBufBelow {
		r.buf = b[:0]
	} else {
		r.buf = nil
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return nil
}
