package actors

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// userGrain owns inbox-<user>, the user's sync timeline, and the
// conversation list derived from it; it tells the user's online device
// grains when the timeline grows.
type userGrain struct {
	svc     *Service
	id      string
	idle    idleCheck
	state   *userState
	j       *journal
	broken  bool
	devices map[string]bool   // online devices
	epochs  map[string]uint64 // newest DevicePresence.epoch per device
	snap    snapshotMark
	// retained: the inbox has a retention ($maxAge or $maxCount), so its
	// entries must be covered by a snapshot before they go; snapEvery is
	// then at most half the $maxCount.
	retained  bool
	snapEvery int
	// floor: the inbox holds at least this many entries (learnt from a
	// failed append), even if the oldest of them expired unread.
	floor uint64
	// watching: read-fanout groups asked to notify this user (see notify.go)
	watching map[string]bool
}

// snapshotMark remembers the latest snapshot a grain wrote or loaded.
type snapshotMark struct {
	covers uint64
	at     time.Time
}

// due says whether a grain whose stream holds durable events should write
// a snapshot: every Config.SnapshotEvery events, or, when force (idle or
// stopping), whenever it has anything new.
func (m snapshotMark) due(durable uint64, every int, force bool) bool {
	if durable <= m.covers {
		return false
	}
	return force || durable-m.covers >= uint64(every)
}

func (g *userGrain) Receive(ctx actor.Context) {
	if _, tick := ctx.Message().(*idleTick); !tick {
		g.idle.touch()
	}
	switch m := ctx.Message().(type) {
	case *cluster.ClusterInit:
		g.id = m.Identity.Identity
		g.devices, g.epochs = map[string]bool{}, map[string]uint64{}
		g.watching = map[string]bool{}
		if err := g.load(); err != nil {
			g.svc.log.Error("user grain cannot load", "user", g.id, "err", err)
			g.broken = true
		}
		g.idle.start(ctx, g.svc.cfg.PassivateAfter)
		if g.retained {
			// Entries may expire: Close stops this grain so that it
			// writes its snapshot.
			g.svc.users.Store(ctx.Self(), struct{}{})
		}
	case *actor.Stopped:
		g.svc.users.Delete(ctx.Self())
	case *appendDone:
		if err := g.j.done(ctx, m); err != nil {
			g.svc.log.Warn("inbox append failed; rebuilding", "user", g.id, "err", err)
			var wrong *events.WrongExpectedRevisionError
			if errors.As(err, &wrong) && wrong.Exists {
				g.floor = max(g.floor, uint64(wrong.Actual)+1)
			}
			g.broken = true
			return
		}
		g.snapshot(false)
	case *idleTick:
		// A user with devices online stays: it knows where to notify them.
		if g.idle.expired(ctx, g.j == nil || !g.j.idle() || len(g.devices) > 0) {
			ctx.Stop(ctx.Self())
			return
		}
		if len(g.devices) > 0 {
			g.setWatches(ctx, true) // renew the leases
		}
		if g.svc.cfg.Now().Sub(g.snap.at) >= snapshotIdleAge {
			g.snapshot(true)
		}
	case *actor.Stopping:
		g.idle.stop()
		// With a sync retention, entries not covered by a snapshot may
		// expire before the user comes back; otherwise a snapshot only
		// shortens the next load, and only pays off after a few entries.
		g.snapshot(g.retained || g.j != nil && g.j.durable-g.snap.covers >= snapshotMinAtStop)
	case *DevicePresence:
		if m.Epoch == 0 || m.Epoch > g.epochs[m.Device] {
			g.epochs[m.Device] = m.Epoch
			if m.Online {
				g.devices[m.Device] = true
			} else {
				delete(g.devices, m.Device)
			}
		}
		g.setWatches(ctx, false)
		ctx.Respond(&Ok{})
	case *ConversationNotice:
		g.conversationNotice(ctx, m)
	case *Deliver:
		if g.ready(ctx) {
			g.deliver(ctx, m)
		}
	case *MarkRead:
		if g.ready(ctx) {
			g.markRead(ctx, m)
		}
	case *GetUserSeq:
		if !g.ready(ctx) || !current(ctx, m.AtLeast > g.j.durable, g.catchUp) {
			return
		}
		ctx.Respond(&Delivered{UserSeq: g.j.durable})
	case *SyncRequest:
		if g.ready(ctx) {
			g.sync(ctx, m)
		}
	case *ListConversations:
		if g.ready(ctx) {
			g.list(ctx, m)
		}
	}
}

func (g *userGrain) ready(ctx actor.Context) bool { return rebuild(ctx, &g.broken, g.load) }

// catchUp reloads the state if another activation wrote the inbox (see
// catchUp in journal.go).
func (g *userGrain) catchUp(ctx actor.Context) (bool, *Failure) {
	return catchUp(g.svc, g.j, func() error {
		if err := g.load(); err != nil {
			g.broken = true
			return err
		}
		g.setWatches(ctx, false) // the conversations may have changed
		return nil
	}, "user "+g.id)
}

// snapshotIdleAge: an active grain with something new writes a snapshot at
// its idle check when its latest one is older than this, so that a grain
// that never passivates (a user with devices online) is still covered long
// before its oldest inbox entries expire.
const snapshotIdleAge = 10 * time.Minute

// snapshotMinAtStop: without a sync retention, a passivating grain writes a
// snapshot only if it has at least this many events after the latest one.
const snapshotMinAtStop = 64

// load rebuilds the state from the latest snapshot of inbox-<user> and the
// entries after it (the whole stream if there is no usable snapshot), then
// applies the sync retention to the stream.
func (g *userGrain) load() error {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	stream := events.InboxStream(g.id)
	s := newUserState(g.id)
	var snap UserSnapshot
	covers, err := readSnapshot(ctx, g.svc.store, stream, &snap)
	switch {
	case err == nil:
		s = userStateFromSnapshot(g.id, covers, &snap)
	case errors.Is(err, errNoSnapshot):
		if err != errNoSnapshot {
			g.svc.log.Warn("user snapshot unusable; replaying the inbox", "user", g.id, "err", err)
		}
	default:
		return err
	}
	n, err := replayFrom(ctx, g.svc.store, stream, covers, func(n uint64, m proto.Message) {
		if n > s.userSeq+1 {
			g.svc.log.Error("inbox entries expired before a snapshot covered them", "user", g.id, "from", s.userSeq+1, "to", n-1)
		}
		evolveUser(s, n, m)
	})
	if err != nil {
		return err
	}
	if n < g.floor {
		// The newest entries expired before a snapshot covered them (a
		// crash, then silence for longer than the retention): the state
		// lacks them, but the timeline goes on after them.
		g.svc.log.Error("inbox entries expired before a snapshot covered them", "user", g.id, "from", n+1, "to", g.floor)
		n = g.floor
		s.userSeq = n
	}
	g.state, g.j = s, newJournal(g.svc.store, stream, n)
	g.snap = snapshotMark{covers: covers, at: g.svc.cfg.Now()}
	meta, err := g.svc.store.GetStreamMetadata(ctx, stream)
	if err != nil {
		return err
	}
	r := g.svc.cfg.SyncRetention
	g.retained = r > 0 || meta.MaxAge > 0 || meta.MaxCount > 0
	g.snapEvery = g.svc.cfg.SnapshotEvery
	if meta.MaxCount > 0 {
		g.snapEvery = int(min(uint64(g.snapEvery), max(1, meta.MaxCount/2)))
	}
	if g.retained && n > g.snap.covers {
		// Entries may go from now on: the state must not need them.
		if err := writeSnapshot(ctx, g.svc.store, stream, n, s.snapshot()); err != nil {
			return err
		}
		g.snap = snapshotMark{covers: n, at: g.svc.cfg.Now()}
	}
	if r > 0 {
		if meta.MaxAge != r {
			meta.MaxAge = r
			if err := g.svc.store.SetStreamMetadata(ctx, stream, meta); err != nil {
				return err
			}
		}
	}
	return nil
}

// snapshot writes a snapshot of the state when one is due and the state
// holds nothing that is not durable yet. A failed write only costs a
// longer replay at the next load.
func (g *userGrain) snapshot(force bool) {
	if g.broken || g.state == nil || g.j == nil || !g.j.idle() || !g.snap.due(g.j.durable, g.snapEvery, force) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	if err := writeSnapshot(ctx, g.svc.store, events.InboxStream(g.id), g.j.durable, g.state.snapshot()); err != nil {
		if !errors.Is(err, events.ErrClosed) {
			g.svc.log.Warn("user snapshot not written", "user", g.id, "err", err)
		}
		return
	}
	g.snap = snapshotMark{covers: g.j.durable, at: g.svc.cfg.Now()}
}

// deliver appends the new items of a conversation's fanout batch and
// answers once they are durable; then it notifies the online devices.
func (g *userGrain) deliver(ctx actor.Context, d *Deliver) {
	items := decideDeliver(g.state, d)
	var msgs []proto.Message
	for _, it := range items {
		m, err := events.Decode(it.Type, it.Data)
		if err != nil {
			ctx.Respond(fail(Code_INVALID, "%v", err))
			return
		}
		msgs = append(msgs, m)
	}
	g.commit(ctx, msgs, &Delivered{})
}

func (g *userGrain) markRead(ctx actor.Context, m *MarkRead) {
	ev, marker, f := decideMarkRead(g.state, m)
	if f != nil {
		reloaded, uf := g.catchUp(ctx)
		if uf != nil {
			f = uf
		} else if reloaded {
			ev, marker, f = decideMarkRead(g.state, m)
		}
	}
	if f != nil {
		ctx.Respond(f)
		return
	}
	var msgs []proto.Message
	if ev != nil {
		msgs = append(msgs, ev)
	}
	// Answered with the marker that results (Written.Seq), once durable.
	g.commit(ctx, msgs, &Written{ConversationId: m.ConversationId, Seq: marker})
}

// commit encodes, evolves, appends, and answers with reply (a *Delivered gets the
// user seq) once everything up to the new entries is durable.
func (g *userGrain) commit(ctx actor.Context, msgs []proto.Message, reply proto.Message) {
	upTo := g.j.applied
	if len(msgs) > 0 {
		// Encode first: an entry the journal refuses must not reach the state.
		var err error
		if upTo, err = g.j.add(msgs...); err != nil {
			ctx.Respond(fail(Code_INVALID, "%v", err))
			return
		}
	}
	for _, m := range msgs {
		evolveUser(g.state, g.state.userSeq+1, m)
		if mc, ok := m.(*eventspb.MembershipChanged); ok {
			g.setWatch(ctx, mc.ConversationId, false)
		}
	}
	sender := ctx.Sender()
	var newest *eventspb.SyncEntry
	if n := len(msgs); n > 0 {
		last := g.j.queue[len(g.j.queue)-1]
		if len(last.Data) <= g.svc.cfg.Limits.InlineMaxSize+256 {
			newest = &eventspb.SyncEntry{UserSeq: upTo, Type: last.Type, Data: last.Data}
		}
	}
	g.j.whenDurable(upTo, func(err error) {
		if err != nil {
			ctx.Send(sender, unavailable(err))
			return
		}
		if d, ok := reply.(*Delivered); ok {
			d.UserSeq = upTo
		}
		ctx.Send(sender, reply)
		if pushes(msgs) {
			g.notifyDevices(ctx, upTo, newest)
		}
	})
	g.j.flush(ctx)
}

func (g *userGrain) notifyDevices(ctx actor.Context, userSeq uint64, newest *eventspb.SyncEntry) {
	for dev := range g.devices {
		g.svc.sendGrain(deviceIdentity(g.id, dev), kindDevice, &NotifyDevice{UserSeq: userSeq, Entry: newest})
	}
}

// sync answers a page of the sync timeline after the device's user seq
// (the page rules are syncView).
func (g *userGrain) sync(ctx actor.Context, m *SyncRequest) {
	limit := int(m.Limit)
	if limit <= 0 || limit > MaxSyncLimit {
		ctx.Respond(fail(Code_INVALID, "sync limit must be 1..%d", MaxSyncLimit))
		return
	}
	// (The device saw more than this grain knows of: catch up first.)
	if !current(ctx, max(m.AfterUserSeq, m.AtLeast) > g.j.durable, g.catchUp) {
		return
	}
	newest := g.j.durable
	if m.AfterUserSeq >= newest {
		ctx.Respond(&eventspb.SyncPage{LastUserSeq: newest, FirstUserSeq: 1})
		return
	}
	store, stream, sender, root := g.svc.store, events.InboxStream(g.id), ctx.Sender(), ctx.ActorSystem().Root
	go func() {
		c, cancel := context.WithTimeout(context.Background(), appendTimeout)
		defer cancel()
		// Read in chunks until the page is full by count or bytes.
		var read []events.RecordedEvent
		size := 0
		from := events.Revision(m.AfterUserSeq)
		for len(read) < limit && size < MaxPageBytes && uint64(from) < newest {
			page, err := store.ReadStream(c, stream, events.ReadStreamOptions{From: from, Limit: min(limit-len(read), readChunk)})
			if errors.Is(err, events.ErrStreamNotFound) {
				break
			}
			if err != nil {
				root.Send(sender, unavailable(err))
				return
			}
			if len(page) == 0 {
				break
			}
			for _, e := range page {
				size += len(e.Data)
			}
			read = append(read, page...)
			from = page[len(page)-1].Revision + 1
		}
		root.Send(sender, syncView(read, m.AfterUserSeq, newest, limit))
	}()
}

// list answers a page of the conversation list (the rules are listLines
// and listView); read-fanout groups are asked for their latest state
// first, since their activity decides their place.
func (g *userGrain) list(ctx actor.Context, q *ListConversations) {
	if q.Limit == 0 || q.Limit > MaxListLimit {
		ctx.Respond(fail(Code_INVALID, "list limit must be 1..%d", MaxListLimit))
		return
	}
	// (The device saw more than this grain knows of: catch up first.)
	if !current(ctx, max(q.ChangedAfter, q.AtLeast) > g.j.durable, g.catchUp) {
		return
	}
	lines, userSeq := listLines(g.state, q), g.j.durable
	var ask []*eventspb.ConversationSummary
	for _, sum := range lines {
		if sum.ReadFanout {
			ask = append(ask, sum)
		}
	}
	if len(ask) == 0 {
		respondList(ctx.Respond, lines, nil, q, userSeq)
		return
	}
	sender, root, svc, user := ctx.Sender(), ctx.ActorSystem().Root, g.svc, g.id
	go func() {
		var mu sync.Mutex
		infos := map[string]*eventspb.ConversationInfo{}
		var wg sync.WaitGroup
		for _, sum := range ask {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := svc.request(context.Background(), sum.ConversationId, kindConversation, &GetConversation{Reader: user, ReadSeq: sum.LastReadSeq, NoMembers: true})
				if info, ok := res.(*eventspb.ConversationInfo); ok && err == nil {
					mu.Lock()
					infos[sum.ConversationId] = info
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		respondList(func(m any) { root.Send(sender, m) }, lines, infos, q, userSeq)
	}()
}

func respondList(respond func(any), lines []*eventspb.ConversationSummary, infos map[string]*eventspb.ConversationInfo, q *ListConversations, userSeq uint64) {
	out, f := listView(lines, infos, q, userSeq)
	if f != nil {
		respond(f)
		return
	}
	respond(out)
}

// deviceGrain holds one device's acknowledged user seq (device-<user>/<device>)
// and where its connections are, and pushes notifications to each of them.
type deviceGrain struct {
	svc     *Service
	idle    idleCheck
	user    string
	device  string
	state   deviceState
	j       *journal
	conns   []*actor.PID // connection actors, oldest first
	epoch   uint64       // of the last DevicePresence sent
	newest  uint64       // newest user seq heard of
	loadErr error
}

func deviceIdentity(user, device string) string { return user + "/" + device }

func (g *deviceGrain) Receive(ctx actor.Context) {
	if _, tick := ctx.Message().(*idleTick); !tick {
		g.idle.touch()
	}
	switch m := ctx.Message().(type) {
	case *cluster.ClusterInit:
		id := m.Identity.Identity
		for i := range id {
			if id[i] == '/' {
				g.user, g.device = id[:i], id[i+1:]
			}
		}
		g.loadErr = g.load()
		g.idle.start(ctx, g.svc.cfg.PassivateAfter)
		if g.svc.Members() > 1 {
			// The previous activation may have died with its member and
			// its connections: the user grain must not take the device
			// for online until a connection is announced again
			// (remote_sink.go). Alone, a device grain only stops once
			// its last connection has gone, and said so then.
			g.presence(ctx, false, nil)
		}
	case *appendDone:
		if err := g.j.done(ctx, m); err != nil {
			// Forget the unrecorded ack now; if the stream cannot be read
			// either, the next ack tries again.
			g.loadErr = g.load()
		}
	case *idleTick:
		if g.idle.expired(ctx, len(g.conns) > 0 || !g.j.idle()) {
			ctx.Stop(ctx.Self())
		}
	case *actor.Stopping:
		g.idle.stop()
	case *AttachDevice:
		pid := actor.NewPID(m.Address, m.Id)
		if g.find(pid) < 0 {
			g.conns = append(g.conns, pid)
			ctx.Watch(pid) // a connection that dies unannounced is forgotten
		}
		g.presence(ctx, true, ctx.Sender())
	case *DetachDevice:
		if g.remove(ctx, actor.NewPID(m.Address, m.Id)) && len(g.conns) == 0 {
			g.presence(ctx, false, ctx.Sender())
			return
		}
		ctx.Respond(g.stateReply())
	case *actor.Terminated:
		if g.remove(ctx, m.Who) && len(g.conns) == 0 {
			g.presence(ctx, false, nil)
		}
	case *NotifyDevice:
		g.newest = max(g.newest, m.UserSeq)
		g.notifyConns(ctx, m)
	case *CloseConnections:
		// Named, so that a stale PID's new owner ignores it (service.go).
		m = &CloseConnections{Code: m.Code, Reason: m.Reason, User: g.user, Device: g.device}
		for _, pid := range g.conns { // each detaches as its transport closes it
			ctx.Send(pid, m)
		}
		ctx.Respond(&ConnectionsClosed{Closed: uint32(len(g.conns))})
	case *AckDevice:
		g.ack(ctx, m)
	case *DeviceState:
		ctx.Respond(g.stateReply())
	}
}

func (g *deviceGrain) stateReply() *DeviceState {
	return &DeviceState{AckedUserSeq: g.state.acked, Online: len(g.conns) > 0}
}

func (g *deviceGrain) find(pid *actor.PID) int {
	for i, c := range g.conns {
		if c.Address == pid.Address && c.Id == pid.Id {
			return i
		}
	}
	return -1
}

// remove forgets a connection; it reports whether it was there.
func (g *deviceGrain) remove(ctx actor.Context, pid *actor.PID) bool {
	i := g.find(pid)
	if i < 0 {
		return false
	}
	ctx.Unwatch(g.conns[i])
	g.conns = append(g.conns[:i], g.conns[i+1:]...)
	return true
}

// notifyConns pushes to every connection of the device.
func (g *deviceGrain) notifyConns(ctx actor.Context, m *NotifyDevice) {
	for _, pid := range g.conns {
		ctx.Send(pid, &Push{User: g.user, Device: g.device, UserSeq: m.UserSeq, Entry: m.Entry, ConversationId: m.ConversationId, ConvSeq: m.ConvSeq})
	}
}

// presence tells the user grain, then answers reply (if any) with the
// device's state. Each message carries a larger epoch than the last, so
// the user grain keeps the newest even when two of them cross.
func (g *deviceGrain) presence(ctx actor.Context, online bool, reply *actor.PID) {
	g.epoch = max(g.epoch+1, uint64(time.Now().UnixNano()))
	root, svc := ctx.ActorSystem().Root, g.svc
	st := &DeviceState{AckedUserSeq: g.state.acked, Online: online}
	msg := &DevicePresence{Device: g.device, Online: online, Epoch: g.epoch}
	user := g.user
	go func() {
		_, err := svc.request(context.Background(), user, kindUser, msg)
		if reply == nil {
			return
		}
		if err != nil {
			root.Send(reply, unavailable(err))
			return
		}
		root.Send(reply, st)
	}()
}

// load rebuilds the device's state from its stream.
func (g *deviceGrain) load() error {
	c, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	var st deviceState
	n, err := replay(c, g.svc.store, events.DeviceStream(g.user, g.device), func(_ uint64, m proto.Message) { evolveDevice(&st, m) })
	if err != nil {
		if g.j == nil {
			g.j = newJournal(g.svc.store, events.DeviceStream(g.user, g.device), 0)
		}
		return err
	}
	g.state, g.j = st, newJournal(g.svc.store, events.DeviceStream(g.user, g.device), n)
	return nil
}

func (g *deviceGrain) ack(ctx actor.Context, a *AckDevice) {
	if g.loadErr != nil && g.j.idle() {
		g.loadErr = g.load() // a failed load or append: rebuild from the stream
	}
	if g.loadErr != nil {
		ctx.Respond(unavailable(g.loadErr))
		return
	}
	if a.UserSeq > g.newest {
		// Heard of nothing that new: ask the user grain where the timeline is.
		res, err := g.svc.request(context.Background(), g.user, kindUser, &GetUserSeq{AtLeast: a.UserSeq})
		if err != nil {
			ctx.Respond(unavailable(err))
			return
		}
		g.newest = max(g.newest, res.(*Delivered).UserSeq)
	}
	ev, f := decideAck(&g.state, a, g.newest)
	if f != nil {
		ctx.Respond(f)
		return
	}
	if ev == nil {
		ctx.Respond(g.stateReply())
		return
	}
	upTo, err := g.j.add(ev)
	if err != nil {
		ctx.Respond(fail(Code_INVALID, "%v", err))
		return
	}
	evolveDevice(&g.state, ev)
	sender, st := ctx.Sender(), g.stateReply()
	g.j.whenDurable(upTo, func(err error) {
		if err != nil {
			ctx.Send(sender, unavailable(err))
			return
		}
		ctx.Send(sender, st)
	})
	g.j.flush(ctx)
}
