package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// Grain kinds, as registered in the cluster.
const (
	KindConversation = "conversation"
	KindUser         = "user"
	KindDevice       = "device"

	kindConversation = KindConversation
	kindUser         = KindUser
	kindDevice       = KindDevice
)

// conversationGrain owns conv-<id>: it validates commands with decideConv,
// appends through its journal, answers once the events are durable, then
// fans them out to the members' user grains.
//
// Fanout is recoverable: it resumes from the checkpoint in
// fanout-<id> whenever the grain activates, and user grains drop what they
// already have, so every inbox gets each entry exactly once.
type conversationGrain struct {
	svc     *Service
	id      string
	idle    idleCheck
	state   *convState
	j       *journal
	broken  bool // the journal failed: rebuild before the next command
	fanout  fanout
	waiters []ensureWaiter
	notify  readNotify
	snap    snapshotMark
	// checking holds the writes waiting for checks (Extensions.Checks), in
	// arrival order; they are decided in that order once checked.
	checking []*checkedWrite
	backlog  int // fanout items counted in the member's backlog (countBacklog)
}

type fanoutItem struct {
	seq       uint64
	to        map[string]*InboxItem
	durableAt time.Time // when it became durable (zero: replayed at load)
}

type fanout struct {
	staged       []fanoutItem // applied, not yet durable
	pending      []fanoutItem // durable, not yet delivered to every member
	cursor       uint64       // every event up to here reached every inbox
	checkpointed uint64
	running      bool
	failures     int
}

type ensureWaiter struct {
	seq    uint64
	sender *actor.PID
}

type fanoutDone struct {
	upTo uint64
	err  error
}

type fanoutRetry struct{}

const fanoutBatch = 128

func (g *conversationGrain) Receive(ctx actor.Context) {
	_, stopped := ctx.Message().(*actor.Stopped)
	defer g.countBacklog(stopped)
	if _, tick := ctx.Message().(*idleTick); !tick {
		g.idle.touch()
	}
	switch m := ctx.Message().(type) {
	case *cluster.ClusterInit:
		g.id = m.Identity.Identity
		if err := g.load(); err != nil {
			g.svc.log.Error("conversation grain cannot load", "conversation", g.id, "err", err)
			g.broken = true
		}
		g.idle.start(ctx, g.svc.cfg.PassivateAfter)
		g.startFanout(ctx)
	case *appendDone:
		if err := g.j.done(ctx, m); err != nil {
			g.svc.log.Warn("conversation append failed; rebuilding", "conversation", g.id, "err", err)
			g.broken = true
			g.fanout.staged = nil
			return
		}
		g.promoteDurable()
		g.startFanout(ctx)
		g.scheduleNotify(ctx)
	case *WatchConversation:
		g.watch(m)
	case *notifyTick:
		g.notify.timer = false
		g.notifyWatchers(ctx)
	case *fanoutDone:
		g.fanoutDone(ctx, m)
	case *fanoutRetry:
		g.fanout.running = false
		g.startFanout(ctx)
	case *idleTick:
		busy := g.j == nil || !g.j.idle() || g.fanout.running || len(g.fanout.pending) > 0 || len(g.waiters) > 0 || g.notify.timer || len(g.checking) > 0
		if g.idle.expired(ctx, busy) {
			g.writeCheckpoint(true)
			if g.j != nil {
				g.snapshot(g.j.durable-g.snap.covers >= snapshotMinAtStop)
			}
			ctx.Stop(ctx.Self())
		}
	case *actor.Stopping:
		g.idle.stop()
	case *EnsureFanout:
		if !g.ensureReady(ctx) || !current(ctx, m.Seq > g.state.lastSeq, g.catchUp) {
			return
		}
		if m.Seq > g.fanout.cursor {
			g.waiters = append(g.waiters, ensureWaiter{m.Seq, ctx.Sender()})
			return
		}
		ctx.Respond(&Written{Seq: g.fanout.cursor, ConversationId: g.id})
	case *GetConversation:
		if !g.ensureReady(ctx) || !current(ctx, g.hidden(m.Reader) || m.SeenSeq > g.state.lastSeq, g.catchUp) {
			return
		}
		ctx.Respond(g.info(m))
	case *GetHistory:
		if !g.ensureReady(ctx) || !current(ctx, g.hidden(m.Reader), g.catchUp) {
			return
		}
		g.history(ctx, m, ctx.Sender(), false)
	case *historyAgain:
		if _, f := g.catchUp(ctx); f != nil {
			answer(ctx, m.sender, f)
			return
		}
		g.history(ctx, m.m, m.sender, true)
	case *CreateConversation, *ChangeMember, *SendMessage, *RecallMessage, *EditMessage:
		if !g.ensureReady(ctx) {
			return
		}
		g.submit(ctx, m.(proto.Message))
	case *checksDone:
		m.w.done, m.w.failure = true, m.failure
		if m.draft != nil {
			m.w.cmd = withDraft(m.w.cmd, m.draft).(proto.Message)
		}
		g.decideChecked(ctx)
	}
}

// ensureReady rebuilds the state after a failed append; it answers the
// request with UNAVAILABLE if the store cannot be read.
func (g *conversationGrain) ensureReady(ctx actor.Context) bool {
	return rebuild(ctx, &g.broken, func() error { return g.reload(ctx) })
}

// reload rebuilds the state from the store (after a failed append, or
// when another activation wrote the stream) and resumes what depends on
// it: the fanout, the callers waiting for it, the read-fanout watchers.
func (g *conversationGrain) reload(ctx actor.Context) error {
	if err := g.load(); err != nil {
		return err
	}
	g.startFanout(ctx)
	g.releaseWaiters(ctx) // another activation may have fanned out past them
	g.scheduleNotify(ctx)
	return nil
}

// hidden: the conversation is not there for reader (reads answer NOT_FOUND).
func (g *conversationGrain) hidden(reader string) bool {
	return !g.state.exists() || !g.state.isMember(reader)
}

// catchUp reloads the state if another activation wrote the stream (see
// catchUp in journal.go).
func (g *conversationGrain) catchUp(ctx actor.Context) (bool, *Failure) {
	return catchUp(g.svc, g.j, func() error {
		if err := g.reload(ctx); err != nil {
			g.broken = true
			return err
		}
		return nil
	}, "conversation "+g.id)
}

// load rebuilds the state from conv-<id>; events after the fanout
// checkpoint are queued for fanout again.
func (g *conversationGrain) load() error {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	cp, err := readFanoutCheckpoint(ctx, g.svc.store, g.id)
	if err != nil {
		return err
	}
	lim := g.svc.cfg.Limits
	stream := events.ConversationStream(g.id)
	s, from := newConvState(g.id), uint64(0)
	var snap ConvSnapshot
	covers, err := readSnapshot(ctx, g.svc.store, stream, &snap)
	switch {
	case err == nil && covers <= cp:
		// (A snapshot beyond the fanout checkpoint is not used: the events
		// in between must be replayed to be fanned out again.)
		st, err := convStateFromSnapshot(g.id, covers, &snap)
		if err != nil {
			g.svc.log.Warn("conversation snapshot unusable; replaying the stream", "conversation", g.id, "err", err)
			break
		}
		s, from = st, covers
	case err == nil:
	case errors.Is(err, errNoSnapshot):
		if err != errNoSnapshot {
			g.svc.log.Warn("conversation snapshot unusable; replaying the stream", "conversation", g.id, "err", err)
		}
	default:
		return err
	}
	var pending []fanoutItem
	n, err := replayFrom(ctx, g.svc.store, stream, from, func(n uint64, m proto.Message) {
		evolveConv(s, n, m, lim)
		if n > cp {
			pending = append(pending, fanoutItem{seq: n, to: recipients(s, n, m, lim)})
		}
	})
	if err != nil {
		return err
	}
	g.state = s
	g.j = newJournal(g.svc.store, stream, n)
	g.fanout = fanout{pending: pending, cursor: min(cp, n), checkpointed: cp}
	g.snap = snapshotMark{covers: from}
	return nil
}

// snapshot writes a snapshot of the state when one is due (see
// snapshotMark.due) and the state is durable and fanned out; the fanout
// checkpoint is written first, so that a load can use the snapshot. A
// failed write only costs a longer replay at the next load.
func (g *conversationGrain) snapshot(force bool) {
	f := &g.fanout
	if g.broken || g.state == nil || g.j == nil || !g.j.idle() || f.running || len(f.staged) > 0 || len(f.pending) > 0 ||
		f.cursor != g.j.durable || !g.snap.due(g.j.durable, g.svc.cfg.SnapshotEvery, force) {
		return
	}
	g.writeCheckpoint(true)
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	if err := writeSnapshot(ctx, g.svc.store, events.ConversationStream(g.id), g.j.durable, g.state.snapshot()); err != nil {
		if !errors.Is(err, events.ErrClosed) {
			g.svc.log.Warn("conversation snapshot not written", "conversation", g.id, "err", err)
		}
		return
	}
	g.snap = snapshotMark{covers: g.j.durable, at: time.Now()}
}

// write decides a write, hands its events to the journal and answers the
// sender once they are durable. unchecked: the write skipped its checks
// (Extensions.Checks) because the rules alone answered it (a refusal or a
// duplicate).
func (g *conversationGrain) write(ctx actor.Context, sender *actor.PID, cmd proto.Message, unchecked bool) {
	lim := g.svc.cfg.Limits
	evs, w, f := decideConv(g.state, cmd, g.svc.cfg.Now(), lim)
	// A refusal, or "nothing to do" (a member already added, an edit to
	// the same text), may come from a stale state.
	if f != nil || w.Duplicate {
		reloaded, uf := g.catchUp(ctx)
		switch {
		case uf != nil:
			f = uf
		case reloaded:
			evs, w, f = decideConv(g.state, cmd, g.svc.cfg.Now(), lim)
			if f == nil && !w.Duplicate && unchecked {
				f = fail(Code_UNAVAILABLE, "conversation %s changed while deciding; retry", g.id)
			}
		}
	}
	if f != nil {
		answer(ctx, sender, f)
		return
	}
	// Encode first: an event the journal refuses must not reach the state.
	if len(evs) > 0 {
		if _, err := g.j.add(evs...); err != nil {
			answer(ctx, sender, fail(Code_INVALID, "%v", err))
			return
		}
	}
	for _, e := range evs {
		seq := g.state.lastSeq + 1
		evolveConv(g.state, seq, e, lim)
		g.fanout.staged = append(g.fanout.staged, fanoutItem{seq: seq, to: recipients(g.state, seq, e, lim)})
	}
	g.j.whenDurable(w.Seq, func(err error) {
		if err != nil {
			ctx.Send(sender, unavailable(err))
			return
		}
		ctx.Send(sender, w)
	})
	g.j.flush(ctx)
}

// promoteDurable moves staged fanout items that are now durable to pending.
func (g *conversationGrain) promoteDurable() {
	i := 0
	now := time.Now()
	for i < len(g.fanout.staged) && g.fanout.staged[i].seq <= g.j.durable {
		g.fanout.staged[i].durableAt = now
		i++
	}
	g.fanout.pending = append(g.fanout.pending, g.fanout.staged[:i]...)
	g.fanout.staged = g.fanout.staged[i:]
}

// startFanout delivers the next batch of pending events, one Deliver per
// recipient, up to fanoutParallel at a time; the next batch starts when
// every recipient has this one. A recipient thus always gets a
// conversation's entries in seq order, which is what its dedup relies on.
func (g *conversationGrain) startFanout(ctx actor.Context) {
	f := &g.fanout
	if f.running || len(f.pending) == 0 {
		return
	}
	batch := f.pending[:min(len(f.pending), fanoutBatch)]
	upTo := batch[len(batch)-1].seq
	per := map[string][]*InboxItem{}
	for _, it := range batch {
		for u, item := range it.to {
			per[u] = append(per[u], item)
		}
	}
	f.running = true
	if len(per) == 0 {
		g.fanoutDone(ctx, &fanoutDone{upTo: upTo})
		return
	}
	users := make([]string, 0, len(per))
	for u := range per {
		users = append(users, u)
	}
	// Each delivery is a future whose answer comes back to this grain as a
	// continuation (no goroutine per message); each answer starts the next
	// delivery, and the batch is done when the last one answers. Bounding
	// the deliveries in flight keeps a 100k-member creation from timing
	// out on its own queue.
	outstanding, next := len(users), 0
	var firstErr error
	// settle counts one delivery as answered (or as failed to start) and
	// says whether that ended the batch.
	settle := func(err error) bool {
		firstErr = cmpErr(firstErr, err)
		if outstanding--; outstanding == 0 {
			g.fanoutDone(ctx, &fanoutDone{upTo: upTo, err: firstErr})
			return true
		}
		return false
	}
	var launch func()
	finish := func(err error) {
		if !settle(err) {
			launch()
		}
	}
	launch = func() {
		for next < len(users) {
			user := users[next]
			next++
			fut, done, err := g.svc.deliverFuture(g.id, user, per[user])
			if err != nil {
				if settle(err) {
					return
				}
				continue // this slot is free: the next user takes it
			}
			ctx.ReenterAfter(fut, func(res any, err error) {
				done()
				if f, ok := res.(*Failure); ok && err == nil {
					err = f
				}
				finish(err)
			})
			return
		}
	}
	for range min(len(users), fanoutParallel) {
		launch()
	}
}

// fanoutParallel bounds the deliveries of one conversation in flight.
const fanoutParallel = 1024

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (g *conversationGrain) fanoutDone(ctx actor.Context, d *fanoutDone) {
	f := &g.fanout
	if d.err != nil {
		f.failures++
		delay := min(time.Duration(f.failures)*50*time.Millisecond, 2*time.Second)
		g.svc.log.Warn("fanout failed; retrying", "conversation", g.id, "upTo", d.upTo, "err", d.err, "retryIn", delay)
		root, self := ctx.ActorSystem().Root, ctx.Self()
		time.AfterFunc(delay, func() { root.Send(self, &fanoutRetry{}) })
		return // running stays true until the retry
	}
	f.failures = 0
	f.running = false
	i := 0
	for i < len(f.pending) && f.pending[i].seq <= d.upTo {
		i++
	}
	g.observeFanout(f.pending[:i])
	f.pending = f.pending[i:]
	defer g.countBacklog(false) // fanout ends in continuations, outside Receive
	f.cursor = max(f.cursor, d.upTo)
	g.releaseWaiters(ctx)
	// Not after every batch: a checkpoint per message would double the
	// appends of a quiet conversation. Passivation writes the last one.
	if f.cursor-f.checkpointed >= 256 {
		g.writeCheckpoint(false)
	}
	g.startFanout(ctx)
	g.snapshot(false)
}

// releaseWaiters answers the EnsureFanout callers the cursor has reached.
func (g *conversationGrain) releaseWaiters(ctx actor.Context) {
	kept := g.waiters[:0]
	for _, w := range g.waiters {
		if w.seq <= g.fanout.cursor {
			ctx.Send(w.sender, &Written{Seq: g.fanout.cursor, ConversationId: g.id})
		} else {
			kept = append(kept, w)
		}
	}
	g.waiters = kept
}

// writeCheckpoint records the fanout cursor. Losing one only means
// re-delivering (and dropping) a few entries after a crash, so it is
// written in the background unless the grain is about to stop.
func (g *conversationGrain) writeCheckpoint(wait bool) {
	f := &g.fanout
	if f.cursor <= f.checkpointed {
		return
	}
	f.checkpointed = f.cursor
	ev, err := events.Encode([16]byte{}, &eventspb.FanoutCheckpoint{Seq: f.cursor})
	if err != nil {
		return
	}
	store, stream := g.svc.store, events.FanoutStream(g.id)
	write := func() {
		ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
		defer cancel()
		if _, err := store.AppendToStream(ctx, stream, events.Any, ev); err != nil && !errors.Is(err, events.ErrClosed) {
			g.svc.log.Warn("fanout checkpoint not written", "stream", stream, "err", err)
		}
	}
	if wait {
		write()
	} else {
		go write()
	}
}

func readFanoutCheckpoint(ctx context.Context, store events.Store, conv string) (uint64, error) {
	page, err := store.ReadStream(ctx, events.FanoutStream(conv), events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
	if errors.Is(err, events.ErrStreamNotFound) || (err == nil && len(page) == 0) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	m, err := events.Decode(page[0].Type, page[0].Data)
	if err != nil {
		return 0, err
	}
	cp, ok := m.(*eventspb.FanoutCheckpoint)
	if !ok {
		return 0, fmt.Errorf("%s holds %s", events.FanoutStream(conv), page[0].Type)
	}
	return cp.Seq, nil
}

func (g *conversationGrain) info(m *GetConversation) proto.Message {
	s := g.state
	if !s.exists() || !s.isMember(m.Reader) {
		return notFound(g.id)
	}
	info := &eventspb.ConversationInfo{
		ConversationId:     g.id,
		Kind:               s.kind,
		Name:               s.name,
		LastSeq:            s.lastSeq,
		LatestMessageSeq:   s.latestSeq,
		LatestMessage:      s.latest,
		LastActivityUnixMs: s.lastActivity,
		ReadFanout:         s.readFanout(g.svc.cfg.Limits),
		Unread:             s.unreadAfter(m.Reader, m.ReadSeq),
		MemberCount:        uint64(len(s.members)),
	}
	if !m.NoMembers {
		info.Members, info.Admins, info.MoreMembers = memberPage(s.members, m.MembersAfter, int(m.MembersLimit))
	}
	return info
}

// history pages messages from the store (the page rules are historyRead
// and historyView). Only members read.
func (g *conversationGrain) history(ctx actor.Context, m *GetHistory, sender *actor.PID, again bool) {
	s := g.state
	if !s.exists() || !s.isMember(m.Reader) {
		answer(ctx, sender, notFound(g.id))
		return
	}
	opts, empty, f := historyRead(m)
	if f != nil {
		answer(ctx, sender, f)
		return
	}
	if empty {
		answer(ctx, sender, &eventspb.History{LastSeq: g.j.durable})
		return
	}
	opts.Limit = min(opts.Limit, readChunk)
	store, conv := g.svc.store, g.id
	v := newHistoryView(int(m.Limit), g.j.durable, cloneSet(s.recalled), cloneEdits(s.edited))
	// Events at or past known are not this activation's: another one
	// wrote the stream (catchUp), and the recalls and edits applied below
	// may miss some. Once, the grain catches up and reads again.
	known := g.j.applied
	root, self := ctx.ActorSystem().Root, ctx.Self()
	// Reading is I/O: do it off the grain's goroutine.
	go func() {
		c, cancel := context.WithTimeout(context.Background(), appendTimeout)
		defer cancel()
		for !v.done {
			page, err := store.ReadStream(c, events.ConversationStream(conv), opts)
			if err != nil {
				root.Send(sender, unavailable(err))
				return
			}
			if len(page) == 0 {
				break
			}
			for _, e := range page {
				if uint64(e.Revision) >= known && g.svc.shared && !again {
					root.Send(self, &historyAgain{m: m, sender: sender})
					return
				}
				if err := v.add(e); err != nil {
					root.Send(sender, unavailable(err))
					return
				}
			}
			last := page[len(page)-1].Revision
			if opts.Direction == events.Backwards {
				if last == 0 {
					break
				}
				opts.From = last - 1
			} else {
				opts.From = last + 1
			}
		}
		root.Send(sender, v.out)
	}()
}

// historyAgain: a history read found the stream written by another
// activation; the grain catches up and answers it again.
type historyAgain struct {
	m      *GetHistory
	sender *actor.PID
}

// cloneSet copies the recalled seqs for a reader off the grain.
func cloneSet(m map[uint64]uint64) map[uint64]bool {
	out := make(map[uint64]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// cloneEdits copies the edited bodies for a reader off the grain.
func cloneEdits(m map[uint64]edition) map[uint64][]byte {
	out := make(map[uint64][]byte, len(m))
	for k, v := range m {
		out[k] = v.body
	}
	return out
}
