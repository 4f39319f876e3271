package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// firstLive is the lowest revision that retention and deletion still show
// (MaxAge is checked per event, since it depends on the clock).
func (h header) firstLive() Revision {
	lo := max(h.meta.TruncateBefore, h.deletedBefore)
	if h.meta.MaxCount > 0 && h.next > h.meta.MaxCount {
		lo = max(lo, Revision(h.next-h.meta.MaxCount))
	}
	return lo
}

func (h header) expired(created int64, now time.Time) bool {
	return h.meta.MaxAge > 0 && created < now.Add(-h.meta.MaxAge).UnixNano()
}

// durableStream returns the durable state of a stream.
func (s *Embedded) durableStream(name string) (sid uint64, h header, known bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.damage != nil {
		return 0, header{}, false, s.damage
	}
	if s.closed {
		return 0, header{}, false, ErrClosed
	}
	st := s.streams[name]
	if st == nil {
		return 0, header{}, false, nil
	}
	return st.id, st.pub, true, nil
}

func streamReadErr(name string, h header, known bool) error {
	switch {
	case h.tombstoned:
		return fmt.Errorf("%w: %q", ErrStreamDeleted, name)
	case !known || !h.exists():
		return fmt.Errorf("%w: %q", ErrStreamNotFound, name)
	}
	return nil
}

// ReadStream implements Store.
func (s *Embedded) ReadStream(ctx context.Context, stream string, opts ReadStreamOptions) ([]RecordedEvent, error) {
	if err := ValidateStreamName(stream); err != nil {
		return nil, err
	}
	if err := validateLimit(opts.Limit); err != nil {
		return nil, err
	}
	if err := validateDirection(opts.Direction); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sid, h, known, err := s.durableStream(stream)
	if err != nil {
		return nil, err
	}
	if err := streamReadErr(stream, h, known); err != nil {
		return nil, err
	}
	if opts.Direction == Backwards {
		return s.scanStreamBackwards(sid, stream, h, opts.From, opts.Limit)
	}
	evs, _, err := s.scanStream(sid, stream, h, opts.From, opts.Limit)
	return evs, err
}

// scanStream reads up to limit live events from revision from on, and
// returns the revision to continue at.
func (s *Embedded) scanStream(sid uint64, name string, h header, from Revision, limit int) (_ []RecordedEvent, _ Revision, err error) {
	defer func() { err = s.readErr(err) }()
	if err := s.beginRead(); err != nil {
		return nil, from, err
	}
	defer s.endRead()
	from = max(from, h.firstLive())
	if uint64(from) >= h.next {
		return nil, from, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: eventKey(sid, from), UpperBound: eventKey(sid, Revision(h.next))})
	if err != nil {
		return nil, from, err
	}
	defer it.Close()
	now := s.opts.Now()
	var out []RecordedEvent
	next := from
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		_, rev, err := decodeEventKey(it.Key())
		if err != nil {
			return nil, from, err
		}
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return nil, from, err
		}
		next = rev + 1
		if h.expired(rec.created, now) {
			continue
		}
		out = append(out, rec.event(name, rev))
	}
	if err := it.Error(); err != nil {
		return nil, from, err
	}
	if len(out) < limit {
		next = Revision(h.next) // scanned to the end
	}
	return out, next, nil
}

func (s *Embedded) scanStreamBackwards(sid uint64, name string, h header, from Revision, limit int) (_ []RecordedEvent, err error) {
	defer func() { err = s.readErr(err) }()
	if err := s.beginRead(); err != nil {
		return nil, err
	}
	defer s.endRead()
	lo := h.firstLive()
	if uint64(from) >= h.next {
		from = h.last()
	}
	if from < lo {
		return nil, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: eventKey(sid, lo), UpperBound: eventKey(sid, from+1)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	now := s.opts.Now()
	var out []RecordedEvent
	for ok := it.Last(); ok && len(out) < limit; ok = it.Prev() {
		_, rev, err := decodeEventKey(it.Key())
		if err != nil {
			return nil, err
		}
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return nil, err
		}
		if h.expired(rec.created, now) {
			break // events expire oldest first: everything before is expired too
		}
		out = append(out, rec.event(name, rev))
	}
	return out, it.Error()
}

// ReadAll implements Store.
func (s *Embedded) ReadAll(ctx context.Context, opts ReadAllOptions) ([]RecordedEvent, error) {
	if err := validateLimit(opts.Limit); err != nil {
		return nil, err
	}
	if err := validateDirection(opts.Direction); err != nil {
		return nil, err
	}
	var out []RecordedEvent
	from := opts.From.Commit
	if opts.Direction == Forwards {
		from = max(from, 1)
	}
	for len(out) < opts.Limit {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		evs, next, done, err := s.scanAll(from, opts.Direction, opts.Limit-len(out), opts.Filter)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		if done {
			break
		}
		from = next
	}
	return out, nil
}

// maxScan bounds the log entries one scanAll call looks at, so that a
// sparse filter cannot make one call run for ever.
const maxScan = 4096

// scanAll reads live events of the global log from position from (inclusive)
// in direction dir, up to the durable watermark. It returns the position to
// continue at and whether the end was reached.
func (s *Embedded) scanAll(from uint64, dir Direction, limit int, filter Filter) (_ []RecordedEvent, _ uint64, _ bool, err error) {
	defer func() { err = s.readErr(err) }()
	if err := s.beginRead(); err != nil {
		return nil, from, false, err
	}
	defer s.endRead()
	s.mu.RLock()
	durable := s.durablePos
	s.mu.RUnlock()
	var bounds pebble.IterOptions
	if dir == Forwards {
		if from > durable {
			return nil, from, true, nil
		}
		bounds = pebble.IterOptions{LowerBound: logKey(from), UpperBound: logKey(durable + 1)}
	} else {
		from = min(from, durable)
		if from == 0 {
			return nil, 0, true, nil
		}
		bounds = pebble.IterOptions{LowerBound: logKey(1), UpperBound: logKey(from + 1)}
	}
	it, err := s.db.NewIter(&bounds)
	if err != nil {
		return nil, from, false, err
	}
	defer it.Close()
	now := s.opts.Now()
	streams := map[uint64]*streamState{}
	var out []RecordedEvent
	scanned := 0
	step, ok := it.Next, it.First()
	if dir == Backwards {
		step, ok = it.Prev, it.Last()
	}
	next := from
	for ; ok && len(out) < limit; ok = step() {
		if scanned == maxScan {
			return out, next, false, nil
		}
		scanned++
		pos, err := decodeLogKey(it.Key())
		if err != nil {
			return nil, from, false, err
		}
		if dir == Forwards {
			next = pos + 1
		} else {
			next = pos - 1
		}
		l, err := decodeLogEntry(it.Value())
		if err != nil {
			return nil, from, false, err
		}
		st := streams[l.sid]
		if st == nil {
			st = s.durableByID(l.sid)
			if st == nil {
				return nil, from, false, fmt.Errorf("%w: log entry %d names unknown stream %d", ErrCorrupt, pos, l.sid)
			}
			streams[l.sid] = st
		}
		h := st.pub
		if h.tombstoned || l.rev < h.firstLive() || !filter.match(st.name) {
			continue
		}
		v, cached := s.tail.get(pos, l.sid, l.rev)
		if !cached {
			v, err = s.get(eventKey(l.sid, l.rev))
		}
		if errors.Is(err, pebble.ErrNotFound) {
			continue // scavenged after the iterator was opened
		}
		if err != nil {
			return nil, from, false, err
		}
		rec, err := decodeRecord(v)
		if err != nil {
			return nil, from, false, err
		}
		if h.expired(rec.created, now) {
			continue
		}
		out = append(out, rec.event(st.name, l.rev))
	}
	if err := it.Error(); err != nil {
		return nil, from, false, err
	}
	return out, next, !ok, nil
}

// durableByID returns a copy of the stream with its durable header.
func (s *Embedded) durableByID(sid uint64) *streamState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.byID[sid]
	if st == nil {
		return nil
	}
	return &streamState{id: st.id, name: st.name, pub: st.pub}
}

// GetStreamMetadata implements Store.
func (s *Embedded) GetStreamMetadata(ctx context.Context, stream string) (StreamMetadata, error) {
	if err := ValidateStreamName(stream); err != nil {
		return StreamMetadata{}, err
	}
	if err := ctx.Err(); err != nil {
		return StreamMetadata{}, err
	}
	_, h, _, err := s.durableStream(stream)
	if err != nil {
		return StreamMetadata{}, err
	}
	if h.tombstoned {
		return StreamMetadata{}, fmt.Errorf("%w: %q", ErrStreamDeleted, stream)
	}
	return h.meta, nil
}

// SubscribeToStream implements Store.
func (s *Embedded) SubscribeToStream(ctx context.Context, stream string, from SubscribeFrom) (Subscription, error) {
	if err := ValidateStreamName(stream); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_, h, _, err := s.durableStream(stream)
	if err != nil {
		return nil, err
	}
	var cursor Revision
	switch from.kind {
	case fromStart:
	case fromEnd:
		cursor = Revision(h.next)
	case fromAfterRevision:
		if from.rev == RevisionEnd {
			return nil, invalid("subscribe after revision %d", from.rev)
		}
		cursor = from.rev + 1
	default:
		return nil, invalid("a stream subscription starts at the start, the end or after a revision")
	}
	fetch := func() ([]RecordedEvent, error) {
		sid, h, _, err := s.durableStream(stream)
		if err != nil {
			return nil, err
		}
		if h.tombstoned {
			return nil, fmt.Errorf("%w: %q", ErrStreamDeleted, stream)
		}
		evs, next, err := s.scanStream(sid, stream, h, cursor, subscriptionPage)
		if err == nil {
			cursor = next
		}
		return evs, err
	}
	return newCatchUp(s, fetch), nil
}

// SubscribeToAll implements Store.
func (s *Embedded) SubscribeToAll(ctx context.Context, opts SubscribeAllOptions) (Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	var cursor uint64 = 1
	switch opts.From.kind {
	case fromStart:
	case fromEnd:
		s.mu.RLock()
		cursor = s.durablePos + 1
		s.mu.RUnlock()
	case fromAfterPosition:
		if opts.From.pos.Commit == PositionEnd.Commit {
			return nil, invalid("subscribe after position %s", opts.From.pos)
		}
		cursor = opts.From.pos.Commit + 1
	default:
		return nil, invalid("a $all subscription starts at the start, the end or after a position")
	}
	filter := opts.Filter
	fetch := func() ([]RecordedEvent, error) {
		evs, next, _, err := s.scanAll(cursor, Forwards, subscriptionPage, filter)
		if err == nil {
			cursor = next
		}
		return evs, err
	}
	return newCatchUp(s, fetch), nil
}

// subscriptionPage is how many events a subscription holds at most.
const subscriptionPage = 256

// catchUp is a pull-based catch-up subscription: Recv reads the next page
// from the store and, at the durable end, waits for the next commit. History
// and live events come from the same reads, so the switch has no gap and no
// duplicate, and a subscriber that does not read costs one page of memory.
type catchUp struct {
	s      *Embedded
	fetch  func() ([]RecordedEvent, error)
	buf    []RecordedEvent
	done   chan struct{}
	closer sync.Once
}

func newCatchUp(s *Embedded, fetch func() ([]RecordedEvent, error)) *catchUp {
	return &catchUp{s: s, fetch: fetch, done: make(chan struct{})}
}

// Recv implements Subscription. It must not be called concurrently.
func (c *catchUp) Recv(ctx context.Context) (RecordedEvent, error) {
	for {
		select {
		case <-c.done:
			return RecordedEvent{}, ErrClosed
		default:
		}
		if len(c.buf) > 0 {
			e := c.buf[0]
			c.buf[0] = RecordedEvent{}
			c.buf = c.buf[1:]
			return e, nil
		}
		wait := c.s.changedChan() // taken before reading: no commit slips between
		page, err := c.fetch()
		if err != nil {
			return RecordedEvent{}, err
		}
		if len(page) > 0 {
			c.buf = page
			continue
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return RecordedEvent{}, ctx.Err()
		case <-c.done:
			return RecordedEvent{}, ErrClosed
		case <-c.s.quit:
			if err := c.s.usable(); err != nil {
				return RecordedEvent{}, err // damaged, or closed
			}
			return RecordedEvent{}, ErrClosed
		}
	}
}

// Close implements Subscription.
func (c *catchUp) Close() error {
	c.closer.Do(func() { close(c.done) })
	return nil
}
