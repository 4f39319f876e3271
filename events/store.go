package events

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Store is an append-only event store with EventStoreDB semantics: named
// streams of immutable events, a global log ($all) ordering every event of
// every stream, optimistic concurrency through expected revisions, catch-up
// subscriptions and per-stream retention.
//
// Every method is safe for concurrent use. Slices handed to and returned by a
// Store are owned by the caller afterwards: the store copies what it keeps.
//
// Errors callers decide on are typed: ErrInvalidArgument, ErrStreamNotFound,
// ErrStreamDeleted, ErrWrongExpectedRevision (as *WrongExpectedRevisionError),
// ErrClosed, and ErrUnavailable from backends behind a network. A failed
// call changes nothing, except that an append, delete or metadata change
// that fails with ErrUnavailable may have happened: repeating it with the
// same event ids settles it without duplicates.
type Store interface {
	// AppendToStream appends events atomically at the end of stream, if the
	// stream is where expected says. It returns after the events are durable.
	// Re-appending the same event ids at the same place succeeds again with
	// the original result and writes nothing (a retry after a lost ack).
	AppendToStream(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (WriteResult, error)

	// ReadStream reads at most opts.Limit events of stream starting at
	// opts.From (inclusive), forwards or backwards. Expired and truncated
	// events are skipped. A stream that never existed or was soft-deleted
	// gives ErrStreamNotFound; a tombstoned one ErrStreamDeleted.
	ReadStream(ctx context.Context, stream string, opts ReadStreamOptions) ([]RecordedEvent, error)

	// ReadAll reads at most opts.Limit events of the global log starting at
	// opts.From (inclusive), optionally only of streams with a given prefix.
	ReadAll(ctx context.Context, opts ReadAllOptions) ([]RecordedEvent, error)

	// SubscribeToStream delivers the events of stream after from, then live
	// events as they are appended: in order, each once, with no gap at the
	// switch. The stream need not exist yet.
	SubscribeToStream(ctx context.Context, stream string, from SubscribeFrom) (Subscription, error)

	// SubscribeToAll is SubscribeToStream for the global log.
	SubscribeToAll(ctx context.Context, opts SubscribeAllOptions) (Subscription, error)

	// SetStreamMetadata replaces the retention settings of stream.
	SetStreamMetadata(ctx context.Context, stream string, meta StreamMetadata) error

	// GetStreamMetadata returns the retention settings of stream (zero
	// value when none were set).
	GetStreamMetadata(ctx context.Context, stream string) (StreamMetadata, error)

	// DeleteStream soft-deletes stream: reads say ErrStreamNotFound until a
	// new append recreates it, whose revisions continue after the deleted ones.
	DeleteStream(ctx context.Context, stream string, expected ExpectedRevision) (DeleteResult, error)

	// TombstoneStream deletes stream for ever: reads and appends say
	// ErrStreamDeleted and the name can never be used again.
	TombstoneStream(ctx context.Context, stream string, expected ExpectedRevision) (DeleteResult, error)

	// Close releases the store. Calls after Close return ErrClosed.
	Close() error
}

// Subscription is a catch-up subscription. It is pull-based: a subscriber
// that stops calling Recv holds no more than one page of events and never
// slows writers down.
type Subscription interface {
	// Recv blocks until the next event, ctx is done or the subscription ends
	// (Close, store closed, stream tombstoned).
	Recv(ctx context.Context) (RecordedEvent, error)
	// Close ends the subscription; a blocked Recv returns ErrClosed.
	Close() error
}

// Revision is the 0-based number of an event in its stream. Revisions of a
// stream are gapless: the n-th event ever appended has revision n-1.
type Revision uint64

// RevisionEnd, as ReadStreamOptions.From, reads from the last event.
const RevisionEnd Revision = math.MaxUint64

// Position is the place of an event in the global log. Positions strictly
// increase in append order; they need not be contiguous (EventStoreDB uses
// byte offsets), so only compare them. Commit orders; Prepare breaks ties.
type Position struct {
	Commit, Prepare uint64
}

// PositionStart and PositionEnd are the ends of the global log.
var (
	PositionStart = Position{}
	PositionEnd   = Position{Commit: math.MaxUint64, Prepare: math.MaxUint64}
)

// Less reports whether p comes before q in the global log.
func (p Position) Less(q Position) bool {
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Prepare < q.Prepare
}

func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Commit, p.Prepare) }

// EventData is an event to append.
type EventData struct {
	// ID identifies the event for idempotent appends. A zero ID is replaced
	// by a random one (the append is then not idempotent).
	ID uuid.UUID
	// Type names the event, e.g. "MessageSent". Required.
	Type string
	// Data is the payload (protobuf for imsync's own events).
	Data []byte
	// Metadata is optional opaque bytes (correlation ids, tracing).
	Metadata []byte
}

// RecordedEvent is an event as stored: immutable.
type RecordedEvent struct {
	ID       uuid.UUID
	Type     string
	Data     []byte
	Metadata []byte
	Stream   string
	Revision Revision
	Position Position
	Created  time.Time
}

// WriteResult says where an append landed: the revision of its last event
// and that event's global position.
type WriteResult struct {
	NextExpected Revision // revision of the last event appended
	Position     Position
}

// DeleteResult is the global position of a deletion.
type DeleteResult struct {
	Position Position
}

// Direction of a read.
type Direction uint8

const (
	Forwards Direction = iota
	Backwards
)

// ReadStreamOptions select a page of a stream.
type ReadStreamOptions struct {
	Direction Direction
	// From is the first revision to return (inclusive): 0 is the start,
	// RevisionEnd the last event (useful backwards).
	From Revision
	// Limit is the page size, 1..MaxReadLimit.
	Limit int
}

// ReadAllOptions select a page of the global log.
type ReadAllOptions struct {
	Direction Direction
	// From is the first position to return (inclusive): PositionStart or
	// PositionEnd, or a position an event was read at.
	From Position
	// Limit is the page size, 1..MaxReadLimit.
	Limit int
	// Filter keeps only events of some streams (none: all user streams).
	Filter Filter
}

// Filter selects streams by name prefix in $all reads and subscriptions.
type Filter struct {
	StreamPrefixes []string
}

func (f Filter) match(stream string) bool {
	if len(f.StreamPrefixes) == 0 {
		return true
	}
	for _, p := range f.StreamPrefixes {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

// SubscribeFrom says where a subscription starts. The zero value is
// SubscribeFromStart.
type SubscribeFrom struct {
	kind fromKind
	rev  Revision
	pos  Position
}

type fromKind uint8

const (
	fromStart fromKind = iota
	fromEnd
	fromAfterRevision
	fromAfterPosition
)

// SubscribeFromStart delivers every event, then live ones.
func SubscribeFromStart() SubscribeFrom { return SubscribeFrom{kind: fromStart} }

// SubscribeFromEnd delivers only events appended after the subscription.
func SubscribeFromEnd() SubscribeFrom { return SubscribeFrom{kind: fromEnd} }

// SubscribeAfterRevision resumes a stream subscription after revision r
// (exclusive: r itself was already processed).
func SubscribeAfterRevision(r Revision) SubscribeFrom {
	return SubscribeFrom{kind: fromAfterRevision, rev: r}
}

// SubscribeAfterPosition resumes a $all subscription after position p
// (exclusive), typically a checkpoint.
func SubscribeAfterPosition(p Position) SubscribeFrom {
	return SubscribeFrom{kind: fromAfterPosition, pos: p}
}

// SubscribeAllOptions configure a $all subscription.
type SubscribeAllOptions struct {
	From   SubscribeFrom
	Filter Filter
}

// StreamMetadata holds a stream's retention settings. Events outside them
// are never returned and their space is reclaimed by scavenging.
type StreamMetadata struct {
	// MaxAge expires events older than this (0: keep for ever).
	MaxAge time.Duration
	// MaxCount keeps only the latest MaxCount events (0: no limit).
	MaxCount uint64
	// TruncateBefore hides every event with a smaller revision.
	TruncateBefore Revision
}

// ExpectedRevision is the optimistic-concurrency condition of a write. Use
// Any, NoStream, StreamExists or Exactly; the zero value is invalid.
type ExpectedRevision struct {
	kind expectKind
	rev  Revision
}

type expectKind uint8

const (
	expectInvalid expectKind = iota
	expectAny
	expectNoStream
	expectStreamExists
	expectExact
)

var (
	// Any writes wherever the stream is.
	Any = ExpectedRevision{kind: expectAny}
	// NoStream writes only if the stream does not exist (or was soft-deleted).
	NoStream = ExpectedRevision{kind: expectNoStream}
	// StreamExists writes only if the stream has events.
	StreamExists = ExpectedRevision{kind: expectStreamExists}
)

// Exactly writes only if the stream's last revision is r.
func Exactly(r Revision) ExpectedRevision { return ExpectedRevision{kind: expectExact, rev: r} }

// Revision returns the revision of an Exactly expectation.
func (e ExpectedRevision) Revision() (Revision, bool) { return e.rev, e.kind == expectExact }

func (e ExpectedRevision) String() string {
	switch e.kind {
	case expectAny:
		return "any"
	case expectNoStream:
		return "no stream"
	case expectStreamExists:
		return "stream exists"
	case expectExact:
		return fmt.Sprintf("revision %d", e.rev)
	}
	return "invalid"
}

// Limits on what a Store accepts. They bound memory per request and match
// EventStoreDB's defaults where it has one.
const (
	MaxStreamNameLen = 512
	MaxEventTypeLen  = 256
	// MaxEventSize bounds Data+Metadata of one event.
	MaxEventSize = 1 << 20
	// MaxAppendSize bounds the Data+Metadata of all events of one append.
	MaxAppendSize = 4 << 20
	// MaxAppendEvents bounds how many events one append may carry.
	MaxAppendEvents = 10_000
	// MaxReadLimit bounds the page size of a read.
	MaxReadLimit = 10_000
)

var (
	// ErrInvalidArgument wraps every refusal of bad input.
	ErrInvalidArgument = errors.New("events: invalid argument")
	// ErrStreamNotFound: the stream has no events (never written, or soft-deleted).
	ErrStreamNotFound = errors.New("events: stream not found")
	// ErrStreamDeleted: the stream was tombstoned.
	ErrStreamDeleted = errors.New("events: stream deleted")
	// ErrWrongExpectedRevision: the stream is not where the write expected.
	ErrWrongExpectedRevision = errors.New("events: wrong expected revision")
	// ErrClosed: the store or subscription is closed.
	ErrClosed = errors.New("events: closed")
	// ErrUnavailable: a remote store could not be reached or did not answer
	// in time. The outcome of a write is then unknown; retry it with the
	// same event ids.
	ErrUnavailable = errors.New("events: store unavailable")
	// ErrCorrupt: stored data failed validation.
	ErrCorrupt = errors.New("events: corrupt store")
	// ErrNotAStore: the directory holds something other than an imsync store.
	ErrNotAStore = errors.New("events: not an imsync event store")
	// ErrInUse: another process has the store open.
	ErrInUse = errors.New("events: store in use by another process")
)

// WrongExpectedRevisionError says where the stream really is.
type WrongExpectedRevisionError struct {
	Stream   string
	Expected ExpectedRevision
	// Actual is the stream's last revision; meaningless when !Exists.
	Actual Revision
	// Exists is false when the stream has no events.
	Exists bool
}

func (e *WrongExpectedRevisionError) Error() string {
	actual := "no stream"
	if e.Exists {
		actual = fmt.Sprintf("revision %d", e.Actual)
	}
	return fmt.Sprintf("events: wrong expected revision on %q: expected %s, stream is at %s", e.Stream, e.Expected, actual)
}

func (e *WrongExpectedRevisionError) Is(target error) bool { return target == ErrWrongExpectedRevision }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}

// ValidateStreamName checks a user stream name: non-empty, at most
// MaxStreamNameLen bytes of UTF-8 without control characters, not starting
// with '$' (reserved for system streams such as $all).
func ValidateStreamName(stream string) error {
	switch {
	case stream == "":
		return invalid("empty stream name")
	case len(stream) > MaxStreamNameLen:
		return invalid("stream name of %d bytes exceeds %d", len(stream), MaxStreamNameLen)
	case !utf8.ValidString(stream):
		return invalid("stream name is not valid UTF-8")
	case stream[0] == '$':
		return invalid("stream name %q: names starting with '$' are reserved", stream)
	}
	for _, r := range stream {
		if r < 0x20 || r == 0x7f {
			return invalid("stream name %q contains a control character", stream)
		}
	}
	return nil
}

// ValidateAppend checks an append's arguments. Backends call it before
// anything else so that bad input changes nothing.
func ValidateAppend(stream string, expected ExpectedRevision, events []EventData) error {
	if err := ValidateStreamName(stream); err != nil {
		return err
	}
	if err := validateExpected(expected); err != nil {
		return err
	}
	if len(events) == 0 {
		return invalid("append to %q without events", stream)
	}
	if len(events) > MaxAppendEvents {
		return invalid("append of %d events exceeds %d", len(events), MaxAppendEvents)
	}
	total := 0
	for i := range events {
		e := &events[i]
		if e.Type == "" {
			return invalid("event %d has no type", i)
		}
		if len(e.Type) > MaxEventTypeLen || !utf8.ValidString(e.Type) {
			return invalid("event %d: type must be UTF-8 of at most %d bytes", i, MaxEventTypeLen)
		}
		size := len(e.Data) + len(e.Metadata)
		if size > MaxEventSize {
			return invalid("event %d of %d bytes exceeds %d", i, size, MaxEventSize)
		}
		total += size
	}
	if total > MaxAppendSize {
		return invalid("append of %d bytes exceeds %d", total, MaxAppendSize)
	}
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i, e := range events {
		if e.ID == uuid.Nil {
			continue
		}
		if _, dup := seen[e.ID]; dup {
			return invalid("event %d repeats id %s within one append", i, e.ID)
		}
		seen[e.ID] = struct{}{}
	}
	return nil
}

func validateExpected(e ExpectedRevision) error {
	if e.kind == expectInvalid || e.kind > expectExact {
		return invalid("unknown expected revision (use Any, NoStream, StreamExists or Exactly)")
	}
	if e.kind == expectExact && e.rev == RevisionEnd {
		return invalid("expected revision %d out of range", e.rev)
	}
	return nil
}

func validateLimit(limit int) error {
	if limit < 1 || limit > MaxReadLimit {
		return invalid("read limit %d outside 1..%d", limit, MaxReadLimit)
	}
	return nil
}

func validateDirection(d Direction) error {
	if d != Forwards && d != Backwards {
		return invalid("unknown read direction %d", d)
	}
	return nil
}

func validateMetadata(m StreamMetadata) error {
	if m.MaxAge < 0 {
		return invalid("negative $maxAge %s", m.MaxAge)
	}
	if m.MaxAge > 0 && m.MaxAge < time.Second {
		return invalid("$maxAge %s below one second", m.MaxAge)
	}
	return nil
}

// checkExpected reports whether a stream whose state is (exists, last)
// satisfies e.
func checkExpected(e ExpectedRevision, exists bool, last Revision) bool {
	switch e.kind {
	case expectAny:
		return true
	case expectNoStream:
		return !exists
	case expectStreamExists:
		return exists
	case expectExact:
		return exists && last == e.rev
	}
	return false
}
