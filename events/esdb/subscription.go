package esdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	client "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imsync/imsync/events"
)

// subscription is a catch-up subscription of the server, followed by one
// goroutine (the pump) that hands events to Recv one at a time, so that a
// subscriber that stops reading holds one event here and leaves the rest
// to gRPC flow control and the server (which falls back to reading
// history for a slow subscriber). When the connection drops, the pump
// subscribes again after the last event it received: no loss, no
// duplicate.
type subscription struct {
	s      *Store
	stream string        // "" for $all
	filter events.Filter // $all only
	ctx    context.Context
	cancel context.CancelFunc

	next   chan events.RecordedEvent
	ended  chan struct{} // closed when the pump stops; err says why
	err    error
	closed chan struct{}
	once   sync.Once

	// Where to subscribe again (pump only).
	afterRev *events.Revision
	afterPos *events.Position
}

// SubscribeToStream implements events.Store.
func (s *Store) SubscribeToStream(ctx context.Context, stream string, from events.SubscribeFrom) (events.Subscription, error) {
	if err := events.ValidateStreamName(stream); err != nil {
		return nil, err
	}
	var after *events.Revision
	switch kind, rev, _ := from.Start(); kind {
	case events.StartAtStart:
	case events.StartAfterRevision:
		if rev == events.RevisionEnd {
			return nil, invalidStart("subscribe after the end of a stream")
		}
		after = &rev
	case events.StartAtEnd:
		// Resolved now, so that a resubscription knows where "the end" was.
		last, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
		switch {
		case err == nil && len(last) == 1:
			after = &last[0].Revision
		case err == nil, errors.Is(err, events.ErrStreamNotFound), errors.Is(err, events.ErrStreamDeleted):
		default:
			return nil, err
		}
	default:
		return nil, invalidStart("a stream subscription starts at the start, the end or after a revision")
	}
	sub := s.newSubscription(stream, events.Filter{})
	sub.afterRev = after
	return s.start(ctx, sub)
}

// SubscribeToAll implements events.Store. Filtered subscriptions filter
// on the server; the server's own events are dropped here.
func (s *Store) SubscribeToAll(ctx context.Context, opts events.SubscribeAllOptions) (events.Subscription, error) {
	var after *events.Position
	switch kind, _, pos := opts.From.Start(); kind {
	case events.StartAtStart:
	case events.StartAfterPosition:
		if pos == events.PositionEnd {
			return nil, invalidStart("subscribe after the end of $all")
		}
		after = &pos
	case events.StartAtEnd:
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		last, err := s.readAllPage(ctx, client.Backwards, client.End{}, 1)
		if err != nil {
			return nil, err
		}
		if len(last) == 1 {
			p := position(last[0].Position)
			after = &p
		}
	default:
		return nil, invalidStart("a $all subscription starts at the start, the end or after a position")
	}
	sub := s.newSubscription("", opts.Filter)
	sub.afterPos = after
	return s.start(ctx, sub)
}

func invalidStart(msg string) error {
	return fmt.Errorf("%w: %s", events.ErrInvalidArgument, msg)
}

func (s *Store) newSubscription(stream string, filter events.Filter) *subscription {
	c, cancel := context.WithCancel(context.Background())
	var prefixes []string
	for _, p := range filter.StreamPrefixes {
		if p == "" {
			prefixes = nil // matches every stream
			break
		}
		prefixes = append(prefixes, p)
	}
	return &subscription{
		s: s, stream: stream, filter: events.Filter{StreamPrefixes: prefixes},
		ctx: c, cancel: cancel,
		next: make(chan events.RecordedEvent), ended: make(chan struct{}), closed: make(chan struct{}),
	}
}

// start makes the first subscription (so that its errors reach the
// caller) and starts the pump.
func (s *Store) start(ctx context.Context, sub *subscription) (events.Subscription, error) {
	if err := ctx.Err(); err != nil {
		sub.cancel()
		return nil, err
	}
	es, err := sub.subscribe(ctx)
	if err != nil {
		sub.cancel()
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		es.Close()
		sub.cancel()
		return nil, events.ErrClosed
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	go sub.pump(es)
	return sub, nil
}

// subscribe asks the server for a subscription from where sub is.
func (sub *subscription) subscribe(ctx context.Context) (*client.Subscription, error) {
	// The subscription outlives ctx: it runs under sub.ctx, and ctx only
	// bounds the wait for the server's confirmation.
	var es *client.Subscription
	err := sub.s.do(ctx, func(_ context.Context, c *client.Client) error {
		var err error
		if sub.stream != "" {
			o := client.SubscribeToStreamOptions{From: client.Start{}}
			if sub.afterRev != nil {
				o.From = client.Revision(uint64(*sub.afterRev))
			}
			es, err = c.SubscribeToStream(sub.ctx, sub.stream, o)
			return err
		}
		o := client.SubscribeToAllOptions{From: client.Start{}}
		if sub.afterPos != nil {
			o.From = client.Position{Commit: sub.afterPos.Commit, Prepare: sub.afterPos.Prepare}
		}
		if len(sub.filter.StreamPrefixes) > 0 {
			o.Filter = &client.SubscriptionFilter{Type: client.StreamFilterType, Prefixes: sub.filter.StreamPrefixes}
		}
		es, err = c.SubscribeToAll(sub.ctx, o)
		return err
	})
	if err != nil {
		if es != nil {
			es.Close()
		}
		name := sub.stream
		if name == "" {
			name = "$all"
		}
		return nil, sub.s.mapErr(ctx, "subscribe to", name, err)
	}
	return es, nil
}

// pump follows es, and subscribes again when it drops, until the
// subscription is closed or ends for good.
func (sub *subscription) pump(es *client.Subscription) {
	defer func() {
		sub.s.mu.Lock()
		delete(sub.s.subs, sub)
		sub.s.mu.Unlock()
	}()
	backoff := 20 * time.Millisecond
	for {
		err := sub.follow(es)
		es.Close()
		if sub.ctx.Err() != nil {
			sub.end(events.ErrClosed)
			return
		}
		if err = sub.classify(err); err != nil {
			sub.end(err)
			return
		}
		for {
			select {
			case <-time.After(backoff):
			case <-sub.ctx.Done():
				sub.end(events.ErrClosed)
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			es, err = sub.subscribe(sub.ctx)
			if err == nil {
				break
			}
			if sub.ctx.Err() != nil {
				sub.end(events.ErrClosed)
				return
			}
			if !errors.Is(err, events.ErrUnavailable) {
				sub.end(err)
				return
			}
		}
		backoff = 20 * time.Millisecond
	}
}

// follow hands es's events to Recv until es drops; it returns why.
func (sub *subscription) follow(es *client.Subscription) error {
	for {
		m := es.Recv()
		switch {
		case m.SubscriptionDropped != nil:
			return m.SubscriptionDropped.Error
		case m.EventAppeared != nil:
			r := m.EventAppeared.OriginalEvent()
			if r == nil {
				continue
			}
			if sub.stream != "" {
				if r.EventType == "$streamDeleted" {
					return errTombstoned
				}
				rev := events.Revision(r.EventNumber)
				if sub.afterRev != nil && rev <= *sub.afterRev {
					continue // delivered already (never, from a server keeping to the protocol)
				}
				sub.afterRev = &rev
			} else {
				p := position(r.Position)
				if sub.afterPos != nil && !sub.afterPos.Less(p) {
					continue // as above
				}
				sub.afterPos = &p
				if system(r) || !matches(sub.filter, r.StreamID) {
					continue
				}
			}
			select {
			case sub.next <- recorded(r):
			case <-sub.ctx.Done():
				return sub.ctx.Err()
			}
		}
		// Checkpoints, caught-up and fell-behind change nothing here: the
		// server switches between history and live on its own.
	}
}

var errTombstoned = errors.New("tombstoned")

// classify says whether a drop ends the subscription (the error to give
// Recv) or calls for subscribing again (nil).
func (sub *subscription) classify(err error) error {
	if errors.Is(err, errTombstoned) {
		return events.ErrStreamDeleted
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument, codes.Unimplemented:
		return sub.s.mapErr(sub.ctx, "subscription", sub.stream, err)
	case codes.FailedPrecondition, codes.NotFound:
		if strings.Contains(st.Message(), "is deleted") {
			return events.ErrStreamDeleted
		}
	}
	if sub.stream != "" {
		// A stream subscription also ends when its stream is tombstoned;
		// not every server says so in the same words: look.
		_, rerr := sub.s.ReadStream(sub.ctx, sub.stream, events.ReadStreamOptions{Limit: 1})
		if errors.Is(rerr, events.ErrStreamDeleted) {
			return events.ErrStreamDeleted
		}
	}
	return nil
}

func (sub *subscription) end(err error) {
	sub.err = err
	close(sub.ended)
}

// Recv implements events.Subscription.
func (sub *subscription) Recv(ctx context.Context) (events.RecordedEvent, error) {
	select {
	case <-sub.closed:
		return events.RecordedEvent{}, events.ErrClosed
	default:
	}
	select {
	case e := <-sub.next:
		return e, nil
	case <-sub.ended:
		select {
		case <-sub.closed:
			return events.RecordedEvent{}, events.ErrClosed
		default:
		}
		return events.RecordedEvent{}, sub.err
	case <-sub.closed:
		return events.RecordedEvent{}, events.ErrClosed
	case <-ctx.Done():
		return events.RecordedEvent{}, ctx.Err()
	}
}

// Close implements events.Subscription.
func (sub *subscription) Close() error {
	sub.once.Do(func() {
		close(sub.closed)
		sub.cancel()
	})
	return nil
}
