package actors

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

// Reactor reacts to committed conversation events — a bot that answers, a
// counter, a notifier — after the commit, never on a conversation's path:
// it follows $all from its own checkpoint (stream reactor-<Name>) on a
// projections.Runner inside the Service, started by Start and stopped by
// Close.
//
// React is called once per event at least — events after the last saved
// checkpoint are delivered again after a restart — in commit order, so in
// seq order per conversation, one event at a time. An error (or a panic)
// makes the reactor call React again with the same event, with a growing
// pause (up to 5 s), until it succeeds or the Service closes: nothing is
// skipped, and nothing behind the event overtakes it. Return nil to skip
// an event for good.
//
// A reactor acts through svc, as any client of the Service does, never by
// writing streams. To act exactly once although events may come twice,
// derive the client message id of what it sends from the event (e.g.
// "echo-"+conversation+"-"+seq): the conversation stores a second send with
// the same id only once.
type Reactor struct {
	// Name identifies the reactor's checkpoint: keep it across restarts.
	// 1..100 of [A-Za-z0-9._-].
	Name  string
	React func(ctx context.Context, svc *Service, e Committed) error
	// FromStart: the first time a reactor of this name runs (no checkpoint
	// yet) it is given every conversation event in the store. By default it
	// starts with the events committed after that first start.
	FromStart bool
	// State, if set, is the reactor's in-memory state (a counter): its
	// Snapshot is saved with the checkpoint, in the same event, and Restore
	// is called with it before the reactor resumes (with nil the first
	// time). React then changes the state exactly once per event across
	// restarts, although events come at least once. At most MaxReactorState
	// bytes.
	State projections.Stateful
}

// MaxReactorState bounds a reactor's saved state.
const MaxReactorState = 900 << 10

// Committed is one event a conversation stored.
type Committed struct {
	Conversation string
	Seq          uint64          // the event's conversation seq (revision + 1)
	ID           uuid.UUID       // the stored event's id: the same on every redelivery
	Position     events.Position // in $all
	Time         time.Time       // when the store recorded it
	// Event is the domain event: *eventspb.MessageSent, *eventspb.MemberAdded, ...
	Event proto.Message
}

var reactorName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

func validReactorName(n string) bool { return reactorName.MatchString(n) }

// ReactorPrefix names the checkpoint streams of reactors: reactor-<name>.
const ReactorPrefix = "reactor-"

// reactorSet runs the configured reactors until stopped.
type reactorSet struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startReactors(s *Service, rs []Reactor) *reactorSet {
	ctx, cancel := context.WithCancel(context.Background())
	set := &reactorSet{cancel: cancel}
	for _, r := range rs {
		set.wg.Add(1)
		go func() {
			defer set.wg.Done()
			runReactor(ctx, s, r)
		}()
	}
	return set
}

func (set *reactorSet) stop() {
	if set == nil {
		return
	}
	set.cancel()
	set.wg.Wait()
}

func runReactor(ctx context.Context, s *Service, r Reactor) {
	cps := streamCheckpoints{store: s.store}
	pause := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := startReactorAt(ctx, s.store, cps, r)
		if err == nil {
			rp := &reactorProjection{r: r, svc: s}
			var p projections.Projection = rp
			if r.State != nil {
				p = &statefulReactor{rp}
			}
			runner := &projections.Runner{
				Store: s.store, Checkpoints: cps, Projection: p,
				SaveEvery: 256, SaveIdle: 500 * time.Millisecond,
			}
			err = runner.Run(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("reactor restarting from its checkpoint", "reactor", r.Name, "err", err, "in", pause)
		sleep(ctx, pause)
		pause = min(2*pause, 5*time.Second)
	}
}

// startReactorAt gives a reactor without a checkpoint its first one: the
// newest conversation event, unless it starts from the start. Saving it
// before running means that a restart soon after cannot skip what was
// committed in between.
func startReactorAt(ctx context.Context, store events.Store, cps streamCheckpoints, r Reactor) error {
	if r.FromStart {
		return nil
	}
	_, ok, err := cps.Load(ctx, r.Name)
	if err != nil || ok {
		return err
	}
	last, err := store.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1,
		Filter: events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}})
	if err != nil || len(last) == 0 {
		return err
	}
	return cps.Save(ctx, r.Name, projections.Checkpoint{Position: last[0].Position})
}

// reactorProjection hands conversation events to a reactor.
type reactorProjection struct {
	r   Reactor
	svc *Service
}

func (p *reactorProjection) Name() string { return ReactorPrefix + p.r.Name }

func (p *reactorProjection) Filter() events.Filter {
	return events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}
}

// Handle calls React until it succeeds (or ctx ends): an event is never
// skipped, and the events behind it wait.
func (p *reactorProjection) Handle(ctx context.Context, e projections.Event) error {
	if e.Message == nil {
		return nil // not a domain event
	}
	c := Committed{
		Conversation: e.Stream[len(events.ConversationPrefix):],
		Seq:          uint64(e.Revision) + 1,
		ID:           e.ID, Position: e.Position, Time: e.Time, Event: e.Message,
	}
	pause := 50 * time.Millisecond
	for {
		err := p.react(ctx, c)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.svc.log.Warn("reactor failed; retrying the event", "reactor", p.r.Name, "conversation", c.Conversation, "seq", c.Seq, "err", err, "in", pause)
		sleep(ctx, pause)
		pause = min(2*pause, 5*time.Second)
	}
}

// statefulReactor is a reactor with State: the runner saves and restores
// it with the checkpoint.
type statefulReactor struct {
	*reactorProjection
}

func (p *statefulReactor) Snapshot() ([]byte, error) {
	b, err := p.r.State.Snapshot()
	if err == nil && len(b) > MaxReactorState {
		err = fmt.Errorf("state of %d bytes exceeds %d", len(b), MaxReactorState)
	}
	return b, err
}

func (p *statefulReactor) Restore(b []byte) error { return p.r.State.Restore(b) }

func (p *reactorProjection) react(ctx context.Context, c Committed) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return p.r.React(ctx, p.svc, c)
}

// streamCheckpoints keeps reactor checkpoints in the event store itself
// (stream <name>, the newest few WatchCheckpoint events, each with the
// reactor's state if it has one), so that a Service restarted on the same
// store resumes where it stopped.
type streamCheckpoints struct {
	store events.Store
}

var _ projections.CheckpointStore = streamCheckpoints{}

func (c streamCheckpoints) Load(ctx context.Context, name string) (projections.Checkpoint, bool, error) {
	page, err := c.store.ReadStream(ctx, name, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
	if errors.Is(err, events.ErrStreamNotFound) || (err == nil && len(page) == 0) {
		return projections.Checkpoint{}, false, nil
	}
	if err != nil {
		return projections.Checkpoint{}, false, err
	}
	m, err := events.Decode(page[0].Type, page[0].Data)
	if err != nil {
		return projections.Checkpoint{}, false, err
	}
	cp, ok := m.(*eventspb.WatchCheckpoint)
	if !ok {
		return projections.Checkpoint{}, false, fmt.Errorf("%s holds %s", name, page[0].Type)
	}
	return projections.Checkpoint{Position: events.Position{Commit: cp.Commit, Prepare: cp.Prepare}, State: cp.State}, true, nil
}

func (c streamCheckpoints) Save(ctx context.Context, name string, cp projections.Checkpoint) error {
	ev, err := events.Encode(uuid.New(), &eventspb.WatchCheckpoint{Commit: cp.Position.Commit, Prepare: cp.Position.Prepare, State: cp.State})
	if err != nil {
		return err
	}
	res, err := c.store.AppendToStream(ctx, name, events.Any, ev)
	if err != nil {
		return err
	}
	if res.NextExpected == 0 {
		// Keep only the newest few.
		return c.store.SetStreamMetadata(ctx, name, events.StreamMetadata{MaxCount: 4})
	}
	return nil
}

func (c streamCheckpoints) Delete(ctx context.Context, name string) error {
	_, err := c.store.DeleteStream(ctx, name, events.Any)
	if errors.Is(err, events.ErrStreamNotFound) {
		return nil
	}
	return err
}
