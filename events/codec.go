package events

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Key layout of the embedded store (all integers big-endian so that byte
// order is numeric order):
//
//	\x00format          → storeFormat
//	\x00global          → lastPos(8) nextStreamID(8)
//	'h' sid(8)          → stream header
//	'e' sid(8) rev(8)   → event record
//	'l' pos(8)          → sid(8) rev(8) id(16)   (the global log, $all)
//	'f' sid(8)          → rev(8): the scavenger deleted every event below
//
// A stream header is written when the stream is created and when its
// metadata or deletion state changes, not on every append: Open derives the
// next revision from the last event key and the floor.
//
// An event is written once (under 'e'); the log only points at it. Every
// append is one pebble batch, so an event and its log entry appear together
// or not at all.
const (
	storeFormat = "imsync-events/1"

	prefixHeader = 'h'
	prefixEvent  = 'e'
	prefixLog    = 'l'
	prefixFloor  = 'f'

	recordVersion = 1
	headerVersion = 1
)

var (
	keyFormat = []byte("\x00format")
	keyGlobal = []byte("\x00global")
)

func headerKey(sid uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixHeader
	binary.BigEndian.PutUint64(k[1:], sid)
	return k
}

func floorKey(sid uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixFloor
	binary.BigEndian.PutUint64(k[1:], sid)
	return k
}

func eventKey(sid uint64, rev Revision) []byte {
	return appendEventKey(make([]byte, 0, 17), sid, rev)
}

func appendEventKey(dst []byte, sid uint64, rev Revision) []byte {
	dst = append(dst, prefixEvent)
	dst = binary.BigEndian.AppendUint64(dst, sid)
	return binary.BigEndian.AppendUint64(dst, uint64(rev))
}

func logKey(pos uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], pos)
	return k
}

func decodeLogKey(k []byte) (uint64, error) {
	if len(k) != 9 || k[0] != prefixLog {
		return 0, fmt.Errorf("%w: bad log key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

func decodeEventKey(k []byte) (uint64, Revision, error) {
	if len(k) != 17 || k[0] != prefixEvent {
		return 0, 0, fmt.Errorf("%w: bad event key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:9]), Revision(binary.BigEndian.Uint64(k[9:])), nil
}

// logEntry is the value of a log key.
type logEntry struct {
	sid uint64
	rev Revision
	id  uuid.UUID
}

func (l logEntry) encode() []byte {
	v := make([]byte, 32)
	binary.BigEndian.PutUint64(v, l.sid)
	binary.BigEndian.PutUint64(v[8:], uint64(l.rev))
	copy(v[16:], l.id[:])
	return v
}

func decodeLogEntry(v []byte) (logEntry, error) {
	if len(v) != 32 {
		return logEntry{}, fmt.Errorf("%w: log entry of %d bytes", ErrCorrupt, len(v))
	}
	var l logEntry
	l.sid = binary.BigEndian.Uint64(v)
	l.rev = Revision(binary.BigEndian.Uint64(v[8:]))
	copy(l.id[:], v[16:])
	return l, nil
}

// record is the stored part of an event; stream name and revision come from
// the key.
type record struct {
	id       uuid.UUID
	created  int64 // unix nanoseconds
	pos      uint64
	typ      string
	metadata []byte
	data     []byte
}

func (r *record) appendTo(dst []byte) []byte {
	dst = append(dst, recordVersion)
	dst = append(dst, r.id[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.created))
	dst = binary.BigEndian.AppendUint64(dst, r.pos)
	dst = binary.AppendUvarint(dst, uint64(len(r.typ)))
	dst = append(dst, r.typ...)
	dst = binary.AppendUvarint(dst, uint64(len(r.metadata)))
	dst = append(dst, r.metadata...)
	return append(dst, r.data...)
}

// decodeRecord parses v; the returned slices are copies (pebble reuses v).
func decodeRecord(v []byte) (record, error) {
	var r record
	if len(v) < 1+16+8+8 || v[0] != recordVersion {
		return r, fmt.Errorf("%w: event record of %d bytes, version %v", ErrCorrupt, len(v), firstByte(v))
	}
	copy(r.id[:], v[1:17])
	r.created = int64(binary.BigEndian.Uint64(v[17:25]))
	r.pos = binary.BigEndian.Uint64(v[25:33])
	rest := v[33:]
	typ, rest, ok := cutBytes(rest)
	if !ok {
		return r, fmt.Errorf("%w: event record with truncated type", ErrCorrupt)
	}
	meta, rest, ok := cutBytes(rest)
	if !ok {
		return r, fmt.Errorf("%w: event record with truncated metadata", ErrCorrupt)
	}
	r.typ = string(typ)
	r.metadata = cloneOrNil(meta)
	r.data = cloneOrNil(rest)
	return r, nil
}

func (r *record) event(stream string, rev Revision) RecordedEvent {
	return RecordedEvent{
		ID:       r.id,
		Type:     r.typ,
		Data:     r.data,
		Metadata: r.metadata,
		Stream:   stream,
		Revision: rev,
		Position: Position{Commit: r.pos, Prepare: r.pos},
		Created:  time.Unix(0, r.created).UTC(),
	}
}

// header is the state of one stream.
type header struct {
	next          uint64   // revisions ever appended: the last is next-1
	deleted       bool     // soft-deleted; recreated by the next append
	deletedBefore Revision // a soft delete hid every revision below this
	tombstoned    bool
	meta          StreamMetadata
}

const (
	flagDeleted    = 1 << 0
	flagTombstoned = 1 << 1
)

func (h header) exists() bool { return h.next > 0 && !h.deleted && !h.tombstoned }

func (h header) last() Revision { return Revision(h.next - 1) }

func (h header) encode(name string) []byte {
	v := []byte{headerVersion, 0}
	if h.deleted {
		v[1] |= flagDeleted
	}
	if h.tombstoned {
		v[1] |= flagTombstoned
	}
	v = binary.AppendUvarint(v, h.next)
	v = binary.AppendUvarint(v, uint64(h.meta.TruncateBefore))
	v = binary.AppendUvarint(v, uint64(h.meta.MaxAge))
	v = binary.AppendUvarint(v, h.meta.MaxCount)
	v = binary.AppendUvarint(v, uint64(h.deletedBefore))
	return append(v, name...)
}

func decodeHeader(v []byte) (header, string, error) {
	var h header
	if len(v) < 2 || v[0] != headerVersion {
		return h, "", fmt.Errorf("%w: stream header of %d bytes, version %v", ErrCorrupt, len(v), firstByte(v))
	}
	h.deleted = v[1]&flagDeleted != 0
	h.tombstoned = v[1]&flagTombstoned != 0
	rest := v[2:]
	var nums [5]uint64
	for i := range nums {
		n, size := binary.Uvarint(rest)
		if size <= 0 {
			return h, "", fmt.Errorf("%w: truncated stream header", ErrCorrupt)
		}
		nums[i], rest = n, rest[size:]
	}
	h.next = nums[0]
	h.meta = StreamMetadata{TruncateBefore: Revision(nums[1]), MaxAge: time.Duration(nums[2]), MaxCount: nums[3]}
	h.deletedBefore = Revision(nums[4])
	if len(rest) == 0 {
		return h, "", fmt.Errorf("%w: stream header without a name", ErrCorrupt)
	}
	return h, string(rest), nil
}

func encodeGlobal(lastPos, nextSID uint64) []byte {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, lastPos)
	binary.BigEndian.PutUint64(v[8:], nextSID)
	return v
}

func decodeGlobal(v []byte) (lastPos, nextSID uint64, err error) {
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: global counters of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), nil
}

func cutBytes(b []byte) (field, rest []byte, ok bool) {
	n, size := binary.Uvarint(b)
	if size <= 0 || n > uint64(len(b)-size) {
		return nil, nil, false
	}
	b = b[size:]
	return b[:n], b[n:], true
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func firstByte(b []byte) any {
	if len(b) == 0 {
		return "none"
	}
	return b[0]
}
