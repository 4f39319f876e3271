package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Read-fanout groups append no inbox entry per message, so their members'
// sync timelines do not grow and their devices are not pushed anything.
// Instead, user grains with online devices watch the read-fanout groups
// they belong to (WatchConversation, renewed at every idle check of the
// user grain and lapsing after watchLease), and such a group tells its
// watchers that it changed (ConversationNotice, carrying its newest seq),
// at most once per notify interval: one notice stands for every change up
// to its seq. The user grain passes it to its online devices as a Push
// with conversation_id and conv_seq set.

// watchLeaseFactor: a watch lasts this many Config.PassivateAfter without
// renewal (user grains renew at every idle check, twice per PassivateAfter).
const watchLeaseFactor = 2

// notifyTick is what a conversation's notify timer sends it.
type notifyTick struct{}

// readNotify is a read-fanout conversation's notification state: its
// watchers and what it told them last.
type readNotify struct {
	watchers map[string]time.Time // user → end of the watch's lease
	sent     uint64               // newest seq notified
	last     time.Time            // when
	timer    bool                 // a notifyTick is due
}

// watch records or forgets a watcher; only members of a read-fanout group
// can watch it.
func (g *conversationGrain) watch(m *WatchConversation) {
	n := &g.notify
	if !m.Watch || g.state == nil || !g.state.large || !g.state.isMember(m.User) {
		delete(n.watchers, m.User)
		return
	}
	if n.watchers == nil {
		n.watchers = map[string]time.Time{}
	}
	n.watchers[m.User] = time.Now().Add(watchLeaseFactor * g.svc.cfg.PassivateAfter)
}

// notifyInterval grows with the watchers: one round costs one message per
// watcher.
func (g *conversationGrain) notifyInterval() time.Duration {
	return g.svc.cfg.ReadFanoutNotifyInterval * time.Duration(1+len(g.notify.watchers)/10_000)
}

// scheduleNotify notifies the watchers of durable changes now, or at the
// end of the current interval if a round went out less than an interval ago.
func (g *conversationGrain) scheduleNotify(ctx actor.Context) {
	n := &g.notify
	if g.state == nil || !g.state.large || len(n.watchers) == 0 || g.j.durable <= n.sent || n.timer {
		return
	}
	wait := g.notifyInterval() - time.Since(n.last)
	if wait <= 0 {
		g.notifyWatchers(ctx)
		return
	}
	n.timer = true
	root, self := ctx.ActorSystem().Root, ctx.Self()
	time.AfterFunc(wait, func() { root.Send(self, &notifyTick{}) })
}

// notifyWatchers sends one round of ConversationNotice to the watchers
// whose lease runs and who are still members.
func (g *conversationGrain) notifyWatchers(ctx actor.Context) {
	n := &g.notify
	if g.state == nil || g.j.durable <= n.sent {
		return
	}
	now := time.Now()
	users := make([]string, 0, len(n.watchers))
	for u, until := range n.watchers {
		if now.After(until) || !g.state.isMember(u) {
			delete(n.watchers, u)
			continue
		}
		users = append(users, u)
	}
	n.sent, n.last = g.j.durable, now
	if len(users) == 0 {
		return
	}
	notice := &ConversationNotice{ConversationId: g.id, Seq: n.sent}
	root, c := ctx.ActorSystem().Root, g.svc.cluster
	// Resolving PIDs may mean asking the cluster: off the grain's goroutine.
	go func() {
		for _, u := range users {
			if pid := c.Get(u, kindUser); pid != nil {
				root.Send(pid, notice)
			}
		}
	}()
}

// setWatch makes the user grain watch conv exactly when the user has an
// online device and is a member of conv, a read-fanout group.
func (g *userGrain) setWatch(ctx actor.Context, conv string, renew bool) {
	want := g.wantsWatch(g.state.convs[conv])
	if want == g.watching[conv] && !(want && renew) {
		return
	}
	if want {
		g.watching[conv] = true
	} else {
		delete(g.watching, conv)
	}
	g.sendWatches(ctx, map[string]bool{conv: want})
}

// wantsWatch: the user has an online device and is a member of c, a
// read-fanout group.
func (g *userGrain) wantsWatch(c *convSummary) bool {
	return len(g.devices) > 0 && c != nil && c.member && c.readFanout
}

// setWatches is setWatch for every conversation of the user; renew sends
// the watches that hold again (a lease renewal).
func (g *userGrain) setWatches(ctx actor.Context, renew bool) {
	if g.state == nil {
		return
	}
	changes := map[string]bool{}
	for id, c := range g.state.convs {
		want := g.wantsWatch(c)
		if want != g.watching[id] || (want && renew) {
			changes[id] = want
		}
	}
	for id := range g.watching {
		if _, ok := g.state.convs[id]; !ok {
			changes[id] = false
		}
	}
	for id, want := range changes {
		if want {
			g.watching[id] = true
		} else {
			delete(g.watching, id)
		}
	}
	g.sendWatches(ctx, changes)
}

func (g *userGrain) sendWatches(ctx actor.Context, changes map[string]bool) {
	if len(changes) == 0 {
		return
	}
	root, c, user := ctx.ActorSystem().Root, g.svc.cluster, g.id
	go func() {
		for conv, want := range changes {
			if pid := c.Get(conv, kindConversation); pid != nil {
				root.Send(pid, &WatchConversation{User: user, Watch: want})
			}
		}
	}()
}

// conversationNotice passes a read-fanout group's notice to the online
// devices.
func (g *userGrain) conversationNotice(ctx actor.Context, m *ConversationNotice) {
	if !g.watching[m.ConversationId] || g.j == nil {
		return
	}
	for dev := range g.devices {
		g.svc.sendGrain(deviceIdentity(g.id, dev), kindDevice, &NotifyDevice{UserSeq: g.j.durable, ConversationId: m.ConversationId, ConvSeq: m.Seq})
	}
}
