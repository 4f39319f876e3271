package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/uuid"
)

// The write path is a two-stage pipeline (group commit):
//
//  1. writeLoop takes every request waiting, checks each against the
//     streams' current state, and puts all that pass into one pebble batch,
//     which it applies to the WAL without waiting for the fsync;
//  2. syncLoop waits for that batch's fsync, then publishes the new state to
//     readers and answers every request of the round.
//
// While stage 2 waits for the disk, stage 1 collects the next round, so one
// fsync acknowledges everything that arrived during the previous one.
// Rounds are answered in order, so a reply never runs ahead of the durable
// state it depends on; this includes refusals.

type writeKind uint8

const (
	writeAppend writeKind = iota
	writeMeta
	writeDelete
	writeTombstone
	writeBarrier // Checkpoint: see barrier
)

type writeReq struct {
	kind     writeKind
	stream   string
	expected ExpectedRevision
	events   []EventData
	meta     StreamMetadata
	done     chan writeResult // buffered: the syncer never blocks on it
	// barrier runs on the writer with the store's state exactly durable
	// (writeBarrier); lastPos and nextSID are that state's counters.
	barrier func(lastPos, nextSID uint64) error
}

type writeResult struct {
	res WriteResult
	err error
}

type round struct {
	batch   *pebble.Batch
	reqs    []*writeReq
	results []writeResult
	touched []*streamState
	heads   []header       // heads[i] is the state of touched[i] after the round
	dirty   []*streamState // streams whose header must be written (new, metadata, deletion)
	lastPos uint64
	nextSID uint64
	events  int
	// synced, set on the empty round a barrier sends, is closed by the
	// syncer once every round before it is answered.
	synced chan struct{}
}

// Round limits keep one batch (and the memory of one round) bounded.
const (
	maxRoundEvents = 16 << 10
	maxRoundBytes  = 16 << 20
	minRetryWindow = 4 * maxRoundEvents
)

// submit hands req to the writer and waits for its answer.
func (s *Embedded) submit(ctx context.Context, req *writeReq) (WriteResult, error) {
	if err := ctx.Err(); err != nil {
		return WriteResult{}, err
	}
	if err := s.usable(); err != nil {
		return WriteResult{}, err
	}
	req.done = make(chan writeResult, 1)
	select {
	case s.reqs <- req:
	case <-s.quit:
		if err := s.usable(); err != nil {
			return WriteResult{}, err // damaged, or closed
		}
		return WriteResult{}, ErrClosed
	case <-ctx.Done():
		return WriteResult{}, ctx.Err()
	}
	// Once taken, the request completes even if ctx ends; the caller just
	// stops waiting (and may retry: appends with ids are idempotent).
	select {
	case r := <-req.done:
		return r.res, r.err
	case <-ctx.Done():
		return WriteResult{}, ctx.Err()
	}
}

func (s *Embedded) writeLoop() {
	defer s.wg.Done()
	defer close(s.syncq)
	for {
		var req *writeReq
		select {
		case req = <-s.reqs:
		case <-s.quit:
			return
		}
		if req.kind == writeBarrier {
			s.barrier(req)
			continue
		}
		r := &round{batch: s.db.NewBatch()}
		s.prepare(r, req)
		var barrier *writeReq // ends the round: it must see it durable
	collect:
		for r.events < maxRoundEvents && r.batch.Len() < maxRoundBytes {
			select {
			case req = <-s.reqs:
				if req.kind == writeBarrier {
					barrier = req
					break collect
				}
				s.prepare(r, req)
			default:
				break collect
			}
		}
		s.apply(r)
		s.syncq <- r
		if barrier != nil {
			s.barrier(barrier)
		}
	}
}

// apply writes the round's headers and counters and hands the batch to the
// WAL. pebble treats a failed WAL write as fatal, so only the fsync can fail
// (reported by SyncWait in the syncer).
func (s *Embedded) apply(r *round) {
	r.heads = make([]header, len(r.touched))
	for i, st := range r.touched {
		r.heads[i] = st.cur
		st.round = nil
	}
	// A plain append does not rewrite the header: Open derives a stream's
	// next revision from its last event key (see loadNext).
	for _, st := range r.dirty {
		r.batch.Set(headerKey(st.id), st.cur.encode(st.name), nil)
		st.dirty = false
	}
	r.lastPos, r.nextSID = s.lastPos, s.nextSID
	if r.batch.Empty() {
		r.batch.Close()
		r.batch = nil
		return
	}
	r.batch.Set(keyGlobal, encodeGlobal(s.lastPos, s.nextSID), nil)
	if err := s.db.ApplyNoSyncWait(r.batch, pebble.Sync); err != nil {
		// Only reachable for invalid batches; treat like a failed fsync.
		s.fail(err)
		r.batch = nil
	}
}

func (s *Embedded) syncLoop() {
	defer s.wg.Done()
	for r := range s.syncq {
		if r.synced != nil {
			close(r.synced)
			continue
		}
		var err error
		if r.batch != nil {
			err = r.batch.SyncWait()
			r.batch.Close()
			if err != nil {
				s.fail(err)
			}
		}
		s.mu.Lock()
		failed := s.failed
		if failed == nil {
			for i, st := range r.touched {
				st.pub = r.heads[i]
			}
			if r.lastPos != s.durablePos {
				s.durablePos = r.lastPos
			}
			close(s.changed)
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
		if failed == nil && r.batch != nil {
			// Before any answer: an acknowledged append is always under the mark.
			s.recordHighWater(r.lastPos, r.nextSID)
		}
		for i, req := range r.reqs {
			res := r.results[i]
			if failed != nil {
				res = writeResult{err: failed}
			}
			req.done <- res
		}
	}
}

// fail makes the store refuse every later write: the in-memory state may be
// ahead of the disk, and only a reopen can tell what is durable.
func (s *Embedded) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = fmt.Errorf("events: store failed, reopen it: %w", err)
		s.opts.Logger.Error("event store write failed; refusing writes until reopened", "err", err)
	}
}

func (s *Embedded) failedErr() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.failed
}

func (r *round) reply(req *writeReq, res WriteResult, err error) {
	r.reqs = append(r.reqs, req)
	r.results = append(r.results, writeResult{res, err})
}

func (r *round) touch(st *streamState, dirty bool) {
	if st.round != r {
		st.round = r
		r.touched = append(r.touched, st)
	}
	if dirty && !st.dirty {
		st.dirty = true
		r.dirty = append(r.dirty, st)
	}
}

// prepare checks one request against the current state and, if it passes,
// adds its writes to the round's batch.
func (s *Embedded) prepare(r *round, req *writeReq) {
	if err := s.failedErr(); err != nil {
		r.reply(req, WriteResult{}, err)
		return
	}
	st := s.streams[req.stream] // the writer is the only goroutine that adds streams
	var h header
	if st != nil {
		h = st.cur
	}
	if h.tombstoned {
		r.reply(req, WriteResult{}, fmt.Errorf("%w: %q", ErrStreamDeleted, req.stream))
		return
	}
	switch req.kind {
	case writeAppend:
		res, err := s.prepareAppend(r, st, h, req)
		r.reply(req, res, err)
	case writeMeta:
		h.meta = req.meta
		s.setHeader(r, st, req.stream, h, true)
		r.reply(req, WriteResult{}, nil)
	case writeDelete, writeTombstone:
		if !checkExpected(req.expected, h.exists(), h.last()) {
			r.reply(req, WriteResult{}, wrongExpected(req, h))
			return
		}
		if req.kind == writeDelete {
			if !h.exists() {
				r.reply(req, WriteResult{}, fmt.Errorf("%w: %q", ErrStreamNotFound, req.stream))
				return
			}
			h.deleted, h.deletedBefore = true, Revision(h.next)
		} else {
			h.tombstoned = true
		}
		s.setHeader(r, st, req.stream, h, true)
		r.reply(req, WriteResult{Position: Position{s.lastPos, s.lastPos}}, nil)
	}
}

func wrongExpected(req *writeReq, h header) error {
	return &WrongExpectedRevisionError{Stream: req.stream, Expected: req.expected, Actual: h.last(), Exists: h.exists()}
}

// setHeader records h as the stream's state, creating the stream if needed.
// persist says the header itself changed (not only the next revision).
func (s *Embedded) setHeader(r *round, st *streamState, name string, h header, persist bool) *streamState {
	if st == nil {
		persist = true
		st = &streamState{id: s.nextSID, name: name}
		s.nextSID++
		s.mu.Lock()
		s.streams[name] = st
		s.byID[st.id] = st
		s.mu.Unlock()
	}
	st.cur = h
	r.touch(st, persist)
	return st
}

func (s *Embedded) prepareAppend(r *round, st *streamState, h header, req *writeReq) (WriteResult, error) {
	if st != nil {
		if res, ok, err := s.findRetry(st, h, req); ok || err != nil {
			return res, err
		}
	}
	if !checkExpected(req.expected, h.exists(), h.last()) {
		return WriteResult{}, wrongExpected(req, h)
	}
	now := s.opts.Now().UnixNano()
	if now < s.lastCreated {
		now = s.lastCreated // keep stamps monotonic per store so $maxAge expires a prefix
	}
	s.lastCreated = now
	recreated := h.deleted
	h.deleted = false
	st = s.setHeader(r, st, req.stream, h, recreated) // allocates the id of a new stream
	var buf []byte
	var rev Revision
	for _, e := range req.events {
		id := e.ID
		if id == uuid.Nil {
			id = uuid.New()
		}
		s.lastPos++
		rev = Revision(st.cur.next)
		st.cur.next++
		rec := record{id: id, created: now, pos: s.lastPos, typ: e.Type, metadata: e.Metadata, data: e.Data}
		buf = rec.appendTo(buf[:0])
		r.batch.Set(eventKey(st.id, rev), buf, nil)
		r.batch.Set(logKey(s.lastPos), logEntry{sid: st.id, rev: rev, id: id}.encode(), nil)
		s.recent.add(st.id, id, rev, s.lastPos)
		s.tail.put(s.lastPos, st.id, rev, buf)
	}
	r.events += len(req.events)
	return WriteResult{NextExpected: rev, Position: Position{s.lastPos, s.lastPos}}, nil
}

// findRetry recognises an append whose events are already in the stream at
// the place its expectation names (a retry after a lost ack) and returns
// the original result. ok=false means it is a new append. A retry that
// matches only partly is refused as a wrong expected revision.
func (s *Embedded) findRetry(st *streamState, h header, req *writeReq) (WriteResult, bool, error) {
	first := req.events[0].ID
	if first == uuid.Nil || h.next == 0 {
		return WriteResult{}, false, nil
	}
	var start Revision
	switch req.expected.kind {
	case expectExact:
		start = req.expected.rev + 1
	case expectNoStream:
		start = 0
		if h.deletedBefore > 0 {
			start = h.deletedBefore
		}
	default:
		v, ok := s.recent.find(st.id, first)
		if !ok {
			return WriteResult{}, false, nil
		}
		start = v.rev
	}
	if uint64(start) >= h.next {
		return WriteResult{}, false, nil
	}
	var pos uint64
	for i, e := range req.events {
		rev := start + Revision(i)
		id, p, found, err := s.idAt(st, rev, e.ID)
		if err != nil {
			return WriteResult{}, false, err
		}
		if !found || id != e.ID {
			if i == 0 {
				return WriteResult{}, false, nil // something else is there: not a retry
			}
			return WriteResult{}, false, wrongExpected(req, h)
		}
		pos = p
	}
	return WriteResult{NextExpected: start + Revision(len(req.events)-1), Position: Position{pos, pos}}, true, nil
}

// idAt returns the id and position of the event at rev, from the retry
// cache when it knows want there, else from disk (the writer sees every
// batch it applied).
func (s *Embedded) idAt(st *streamState, rev Revision, want uuid.UUID) (uuid.UUID, uint64, bool, error) {
	if v, ok := s.recent.find(st.id, want); ok && v.rev == rev {
		return want, v.pos, true, nil
	}
	v, err := s.get(eventKey(st.id, rev))
	if errors.Is(err, pebble.ErrNotFound) {
		return uuid.Nil, 0, false, nil
	}
	if err != nil {
		return uuid.Nil, 0, false, s.readErr(err)
	}
	rec, err := decodeRecord(v)
	if err != nil {
		return uuid.Nil, 0, false, err
	}
	return rec.id, rec.pos, true, nil
}

// AppendToStream implements Store.
func (s *Embedded) AppendToStream(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (WriteResult, error) {
	if err := ValidateAppend(stream, expected, events); err != nil {
		return WriteResult{}, err
	}
	return s.submit(ctx, &writeReq{kind: writeAppend, stream: stream, expected: expected, events: events})
}

// SetStreamMetadata implements Store.
func (s *Embedded) SetStreamMetadata(ctx context.Context, stream string, meta StreamMetadata) error {
	if err := ValidateStreamName(stream); err != nil {
		return err
	}
	if err := validateMetadata(meta); err != nil {
		return err
	}
	_, err := s.submit(ctx, &writeReq{kind: writeMeta, stream: stream, meta: meta})
	return err
}

// DeleteStream implements Store.
func (s *Embedded) DeleteStream(ctx context.Context, stream string, expected ExpectedRevision) (DeleteResult, error) {
	return s.delete(ctx, writeDelete, stream, expected)
}

// TombstoneStream implements Store.
func (s *Embedded) TombstoneStream(ctx context.Context, stream string, expected ExpectedRevision) (DeleteResult, error) {
	return s.delete(ctx, writeTombstone, stream, expected)
}

func (s *Embedded) delete(ctx context.Context, kind writeKind, stream string, expected ExpectedRevision) (DeleteResult, error) {
	if err := ValidateStreamName(stream); err != nil {
		return DeleteResult{}, err
	}
	if err := validateExpected(expected); err != nil {
		return DeleteResult{}, err
	}
	res, err := s.submit(ctx, &writeReq{kind: kind, stream: stream, expected: expected})
	return DeleteResult{Position: res.Position}, err
}
