package actors

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// watchStream holds the fanout watcher's checkpoints.
const watchStream = "watch-fanout"

// fanoutWatch makes fanout survive crashes. A conversation grain fans out
// after it acknowledged a send; if the process dies in between, nothing
// would wake that conversation again. The watcher follows every
// conversation event in $all from its checkpoint and asks each
// conversation grain to confirm (EnsureFanout) that it fanned out that far
// — activating it, and so resuming its fanout, if needed. Its checkpoint
// only moves past events whose fanout is confirmed.
type fanoutWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startFanoutWatch(s *Service) *fanoutWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &fanoutWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			if err := w.run(ctx, s); err != nil && ctx.Err() == nil {
				s.log.Warn("fanout watcher restarting", "err", err)
				sleep(ctx, time.Second)
			}
		}
	}()
	return w
}

func (w *fanoutWatch) stop() {
	w.cancel()
	<-w.done
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (w *fanoutWatch) run(ctx context.Context, s *Service) error {
	from := events.SubscribeFromStart()
	page, err := s.store.ReadStream(ctx, watchStream, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
	if err != nil && !errors.Is(err, events.ErrStreamNotFound) {
		return err
	}
	if len(page) == 1 {
		m, err := events.Decode(page[0].Type, page[0].Data)
		if err != nil {
			return err
		}
		if cp, ok := m.(*eventspb.WatchCheckpoint); ok {
			from = events.SubscribeAfterPosition(events.Position{Commit: cp.Commit, Prepare: cp.Prepare})
		}
	} else if err == nil || errors.Is(err, events.ErrStreamNotFound) {
		// Keep only a few checkpoints.
		s.store.SetStreamMetadata(ctx, watchStream, events.StreamMetadata{MaxCount: 4})
	}
	sub, err := s.store.SubscribeToAll(ctx, events.SubscribeAllOptions{From: from, Filter: events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}})
	if err != nil {
		return err
	}
	defer sub.Close()
	var lastSaved time.Time
	for {
		e, err := sub.Recv(ctx)
		if err != nil {
			return err
		}
		upTo := map[string]uint64{}
		last := e.Position
		upTo[e.Stream[len(events.ConversationPrefix):]] = uint64(e.Revision) + 1
		// Take what else is ready, without waiting.
		for len(upTo) < 1024 {
			quick, cancel := context.WithTimeout(ctx, time.Millisecond)
			e, err := sub.Recv(quick)
			cancel()
			if err != nil {
				break
			}
			conv := e.Stream[len(events.ConversationPrefix):]
			upTo[conv] = max(upTo[conv], uint64(e.Revision)+1)
			last = e.Position
		}
		if err := ensureAll(ctx, s, upTo); err != nil {
			return err
		}
		if time.Since(lastSaved) > 200*time.Millisecond {
			ev, err := events.Encode([16]byte{}, &eventspb.WatchCheckpoint{Commit: last.Commit, Prepare: last.Prepare})
			if err != nil {
				return err
			}
			if _, err := s.store.AppendToStream(ctx, watchStream, events.Any, ev); err != nil {
				return err
			}
			lastSaved = time.Now()
		}
	}
}

// ensureAll confirms every conversation's fanout, 16 at a time.
func ensureAll(ctx context.Context, s *Service, upTo map[string]uint64) error {
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for conv, seq := range upTo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
			defer cancel()
			if err := s.EnsureFanout(c, conv, seq); err != nil {
				mu.Lock()
				first = cmpErr(first, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}
