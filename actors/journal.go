package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
)

// journal is a grain's single writer to its stream. The grain decides,
// hands the events to the journal (which encodes them, or refuses them and
// changes nothing), and only then evolves its state (optimistically, before
// the append is durable). The journal
// which appends them with the exact expected revision — so a second
// activation elsewhere can never fork the stream — and tells the grain,
// through a message to itself, when they are durable. While one append is
// in flight, new events queue up and go together in the next one: a busy
// grain pays one append per fsync round, not one per command.
type journal struct {
	store   events.Store
	stream  string
	applied uint64 // events handed to the journal (optimistic revision count)
	durable uint64 // events known durable
	flying  int    // events in the append in flight (0: none)
	queue   []events.EventData
	waiters []waiter
}

type waiter struct {
	upTo uint64
	fn   func(error)
}

// appendDone is what the append goroutine sends back to the grain.
type appendDone struct {
	n   int
	err error
}

const appendTimeout = 10 * time.Second

func newJournal(store events.Store, stream string, durable uint64) *journal {
	return &journal{store: store, stream: stream, applied: durable, durable: durable}
}

// add encodes events and queues them, all or none: on an error nothing is
// queued, so a grain that evolves only after add succeeded never holds
// state its stream cannot have. It returns the revision count after them.
func (j *journal) add(evs ...proto.Message) (uint64, error) {
	enc := make([]events.EventData, 0, len(evs))
	for _, m := range evs {
		e, err := events.Encode([16]byte{}, m)
		if err != nil {
			return 0, err
		}
		if size := len(e.Data) + len(e.Metadata); size > events.MaxEventSize {
			return 0, fmt.Errorf("%s event of %d bytes exceeds %d", e.Type, size, events.MaxEventSize)
		}
		enc = append(enc, e)
	}
	j.queue = append(j.queue, enc...)
	j.applied += uint64(len(evs))
	return j.applied, nil
}

// whenDurable calls fn once the first upTo events of the stream are durable
// (at once if they are), or with the error that stopped them.
func (j *journal) whenDurable(upTo uint64, fn func(error)) {
	if upTo <= j.durable {
		fn(nil)
		return
	}
	j.waiters = append(j.waiters, waiter{upTo, fn})
}

// flush starts an append of the queued events unless one is in flight.
func (j *journal) flush(ctx actor.Context) {
	if j.flying > 0 || len(j.queue) == 0 {
		return
	}
	// One append carries at most what the store accepts in one append; the
	// rest follows when it is durable (done flushes again).
	n, size := 0, 0
	for n < len(j.queue) && n < events.MaxAppendEvents {
		es := len(j.queue[n].Data) + len(j.queue[n].Metadata)
		if n > 0 && size+es > events.MaxAppendSize {
			break
		}
		size += es
		n++
	}
	batch := j.queue[:n:n]
	j.queue = j.queue[n:]
	if len(j.queue) == 0 {
		j.queue = nil
	}
	j.flying = len(batch)
	expected := events.NoStream
	if j.durable > 0 {
		expected = events.Exactly(events.Revision(j.durable - 1))
	}
	root, self, store, stream := ctx.ActorSystem().Root, ctx.Self(), j.store, j.stream
	go func() {
		c, cancel := context.WithTimeout(context.Background(), appendTimeout)
		defer cancel()
		_, err := store.AppendToStream(c, stream, expected, batch...)
		root.Send(self, &appendDone{n: len(batch), err: err})
	}()
}

// done records the end of the append in flight. On failure every waiter
// and every queued event fails: the grain's optimistic state is then wrong
// and must be rebuilt from the store (it reports so by returning the error).
func (j *journal) done(ctx actor.Context, d *appendDone) error {
	j.flying = 0
	if d.err != nil {
		err := fmt.Errorf("append to %s: %w", j.stream, d.err)
		for _, w := range j.waiters {
			w.fn(err)
		}
		j.waiters, j.queue = nil, nil
		return err
	}
	j.durable += uint64(d.n)
	kept := j.waiters[:0]
	for _, w := range j.waiters {
		if w.upTo <= j.durable {
			w.fn(nil)
		} else {
			kept = append(kept, w)
		}
	}
	j.waiters = kept
	j.flush(ctx)
	return nil
}

func (j *journal) idle() bool { return j.flying == 0 && len(j.queue) == 0 }

// behind reports whether the stream holds events after those this journal
// wrote (durable, or in the append in flight, which may have landed): then
// another activation of the grain wrote it. The exact expected revision
// fences that activation's writes, but not answers decided on its state
// alone; see catchUp.
func (j *journal) behind(ctx context.Context) (bool, error) {
	page, err := j.store.ReadStream(ctx, j.stream, events.ReadStreamOptions{From: events.Revision(j.durable + uint64(j.flying)), Limit: 1})
	if errors.Is(err, events.ErrStreamNotFound) {
		return false, nil
	}
	return len(page) > 0, err
}

// catchUp is what a grain does before it answers from its state alone with
// a refusal, or with less than the caller already knows of. In a cluster,
// while members disagree on who owns a grain, a second activation may load
// it and write; the first then holds a state that ends early (its own
// writes would fail on the expected revision and make it rebuild, but a
// refusal writes nothing). So a grain that may have company (Config.Provider
// given) reads its stream past what it knows: when more is there it
// reloads (reload) while its journal is idle and reports true, and the
// caller decides again; while its own writes are in flight (they will
// fail and make it rebuild) the request gets UNAVAILABLE, which callers
// retry. A grain alone pays nothing.
func catchUp(svc *Service, j *journal, reload func() error, what string) (reloaded bool, f *Failure) {
	if !svc.shared || j == nil {
		return false, nil
	}
	c, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	behind, err := j.behind(c)
	switch {
	case err != nil:
		return false, unavailable(err)
	case !behind:
		return false, nil
	case !j.idle():
		return false, fail(Code_UNAVAILABLE, "%s: another member wrote %s; retry", what, j.stream)
	}
	svc.log.Info("grain behind its stream (another member wrote it); reloading", "stream", j.stream)
	if err := reload(); err != nil {
		return false, unavailable(err)
	}
	return true, nil
}

// current makes sure, when suspect (the state alone would refuse the
// request, or ends before what the caller knows of), that a grain's state
// is not behind its stream (catchUp). It answers the request and reports
// false when the stream cannot say.
func current(ctx actor.Context, suspect bool, catchUp func(actor.Context) (bool, *Failure)) bool {
	if !suspect {
		return true
	}
	if _, f := catchUp(ctx); f != nil {
		ctx.Respond(f)
		return false
	}
	return true
}

// replay reads a whole stream in order, calling fn with each event's
// revision count (revision+1) and decoded message.
func replay(ctx context.Context, store events.Store, stream string, fn func(n uint64, m proto.Message)) (uint64, error) {
	return replayFrom(ctx, store, stream, 0, fn)
}

// replayFrom is replay of the events after the first from ones; it returns
// from when there are none.
func replayFrom(ctx context.Context, store events.Store, stream string, from uint64, fn func(n uint64, m proto.Message)) (uint64, error) {
	n := from
	for {
		page, err := store.ReadStream(ctx, stream, events.ReadStreamOptions{From: events.Revision(n), Limit: 1000})
		if errors.Is(err, events.ErrStreamNotFound) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if len(page) == 0 {
			return n, nil
		}
		for _, e := range page {
			m, err := events.Decode(e.Type, e.Data)
			if err != nil {
				return n, err
			}
			n = uint64(e.Revision) + 1
			fn(n, m)
		}
	}
}

// rebuild reloads a grain whose journal failed, before it serves the
// current request; if the store cannot be read, the request gets
// UNAVAILABLE and the next one tries again.
func rebuild(ctx actor.Context, broken *bool, load func() error) bool {
	if !*broken {
		return true
	}
	if err := load(); err != nil {
		ctx.Respond(unavailable(err))
		return false
	}
	*broken = false
	return true
}

// unavailable turns a storage error into the failure callers retry on.
func unavailable(err error) *Failure {
	return fail(Code_UNAVAILABLE, "%v", err)
}
