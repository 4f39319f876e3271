package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imsync/imsync/events"
)

// Runner feeds one projection from a catch-up subscription on $all —
// history first, then live events — and saves its checkpoint as it goes.
//
// Delivery is at-least-once since the last saved checkpoint: after a crash,
// the events after it are delivered again. A Stateful projection gets its
// state back from the same checkpoint (state and position are saved in one
// atomic write), so it neither loses nor double-counts an event. Other
// projections must make Handle idempotent (see Resetter).
type Runner struct {
	Store       events.Store
	Checkpoints CheckpointStore
	Projection  Projection

	// From is where a projection without a checkpoint starts (default:
	// the start of $all). With a checkpoint, the runner resumes after it.
	From events.SubscribeFrom
	// SaveEvery saves the checkpoint after this many events (default 1000).
	SaveEvery int
	// SaveIdle saves the checkpoint once no event came for this long and
	// some are unsaved (default one second).
	SaveIdle time.Duration
	// SaveInterval, when set, spaces the saves that SaveEvery asks for:
	// one comes only once SaveInterval has passed since the previous save
	// and four times as long as that save took. A Stateful projection's
	// Snapshot costs time in proportion to its whole state, so saving it
	// every SaveEvery events makes a long replay quadratic; this bounds
	// the time spent saving to about a fifth. Zero: every SaveEvery
	// events.
	SaveInterval time.Duration

	// Until, when set, makes Run a bounded replay: it returns nil, with
	// the checkpoint saved, once it has applied the event at Until (or
	// found its checkpoint at or after Until). Until is the position of
	// an event the projection's filter selects (a replay tool reads the
	// last one before it starts); zero runs live until ctx ends.
	Until events.Position
	// Applied, when set, is called after each event the projection
	// applied (progress reports). It must not block.
	Applied func(Event)
}

func (r *Runner) saveEvery() int {
	if r.SaveEvery <= 0 {
		return 1000
	}
	return r.SaveEvery
}

func (r *Runner) saveIdle() time.Duration {
	if r.SaveIdle <= 0 {
		return time.Second
	}
	return r.SaveIdle
}

// Run restores the projection from its checkpoint (or starts it afresh at
// From), applies every event after it, then keeps it live until ctx ends.
// It then saves the checkpoint and returns ctx's error. A failing event
// stops it with an *EventError naming that event's position; the
// checkpoint then stays before the event, and the projection's in-memory
// state must not be used until the next Run restores it.
func (r *Runner) Run(ctx context.Context) error {
	p := r.Projection
	name := p.Name()
	if err := checkName(name); err != nil {
		return err
	}
	cp, ok, err := r.Checkpoints.Load(ctx, name)
	if err != nil {
		return fmt.Errorf("projection %s: %w", name, err)
	}
	start := r.From
	var state []byte
	if ok {
		start, state = events.SubscribeAfterPosition(cp.Position), cp.State
	}
	bounded := r.Until != (events.Position{})
	if bounded && ok && !cp.Position.Less(r.Until) {
		if s, isStateful := p.(Stateful); isStateful {
			if err := s.Restore(state); err != nil {
				return fmt.Errorf("projection %s: restore: %w", name, err)
			}
		}
		return nil
	}
	if s, isStateful := p.(Stateful); isStateful {
		if err := s.Restore(state); err != nil {
			return fmt.Errorf("projection %s: restore: %w", name, err)
		}
	}
	opts := events.SubscribeAllOptions{From: start}
	if f, ok := p.(Filter); ok {
		opts.Filter = f.Filter()
	}
	sub, err := r.Store.SubscribeToAll(ctx, opts)
	if err != nil {
		return fmt.Errorf("projection %s: subscribe: %w", name, err)
	}
	defer sub.Close()

	var (
		last     events.Position
		pending  int       // events applied since the last save
		nextSave time.Time // with SaveInterval: no save by SaveEvery before
	)
	save := func(ctx context.Context) error {
		if pending == 0 {
			return nil
		}
		began := time.Now()
		defer func() {
			if r.SaveInterval > 0 {
				nextSave = time.Now().Add(max(r.SaveInterval, 4*time.Since(began)))
			}
		}()
		cp := Checkpoint{Position: last}
		if s, ok := p.(Stateful); ok {
			b, err := s.Snapshot()
			if err != nil {
				return fmt.Errorf("projection %s: snapshot: %w", name, err)
			}
			cp.State = b
		}
		if err := r.Checkpoints.Save(ctx, name, cp); err != nil {
			return fmt.Errorf("projection %s: save checkpoint at %s: %w", name, last, err)
		}
		pending = 0
		return nil
	}
	for {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if pending > 0 {
			rctx, cancel = context.WithTimeout(ctx, r.saveIdle())
		}
		re, err := sub.Recv(rctx)
		cancel()
		if ctx.Err() != nil {
			// Stopped: keep what was applied.
			if err := save(context.WithoutCancel(ctx)); err != nil {
				return err
			}
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// Idle: both backends leave the subscription usable after a
			// Recv whose context ended.
			if err := save(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("projection %s: subscription after %s: %w", name, last, err)
		}
		e, err := Decode(re)
		if err == nil {
			err = p.Handle(ctx, e)
		}
		if err != nil {
			var ee *EventError
			if !errors.As(err, &ee) || ee.Position != re.Position {
				ee = &EventError{Stream: re.Stream, Revision: re.Revision, Position: re.Position, Type: re.Type, Err: err}
			}
			ee.Projection = name
			return ee
		}
		last = re.Position
		pending++
		if r.Applied != nil {
			r.Applied(e)
		}
		if bounded && !re.Position.Less(r.Until) {
			return save(ctx)
		}
		if pending >= r.saveEvery() && (r.SaveInterval == 0 || !time.Now().Before(nextSave)) {
			if err := save(ctx); err != nil {
				return err
			}
		}
	}
}

// Rebuild throws the projection's checkpoint away, resets its state and
// runs it from From (the start of $all by default), like Run.
func (r *Runner) Rebuild(ctx context.Context) error {
	name := r.Projection.Name()
	if err := checkName(name); err != nil {
		return err
	}
	if err := r.Checkpoints.Delete(ctx, name); err != nil {
		return fmt.Errorf("projection %s: %w", name, err)
	}
	if rs, ok := r.Projection.(Resetter); ok {
		if err := rs.Reset(ctx); err != nil {
			return fmt.Errorf("projection %s: reset: %w", name, err)
		}
	}
	return r.Run(ctx)
}
